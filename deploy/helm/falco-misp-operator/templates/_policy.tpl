{{/*
The administrator's policy (issue 15) as the JSON document `falco-misp run --policy-json` reads: policy.targets,
or by default every feed namespace into falco.namespace and falco.extraNamespaces (the namespaces the RBAC grants,
so a default install behaves as before); the ceilings that are set; egress with allowedHosts only when non-empty
(empty: any host). In the pod template's args, so a changed policy rolls the operator on `helm upgrade`.
*/}}
{{- define "falco-misp-operator.policy" -}}
{{- $p := .Values.policy -}}
{{- $targets := $p.targets -}}
{{- if not $targets -}}
{{- $falco := prepend (.Values.falco.extraNamespaces | default list) .Values.falco.namespace | uniq -}}
{{- $targets = list (dict "feedNamespaces" (list "*") "falcoNamespaces" $falco) -}}
{{- end -}}
{{- $egress := dict "allowLoopback" $p.egress.allowLoopback "allowLinkLocal" $p.egress.allowLinkLocal "allowPrivate" $p.egress.allowPrivate -}}
{{- if $p.egress.allowedHosts -}}
{{- $_ := set $egress "allowedHosts" $p.egress.allowedHosts -}}
{{- end -}}
{{- dict "targets" $targets "ceilings" ($p.ceilings | default dict) "egress" $egress | toJson -}}
{{- end -}}
