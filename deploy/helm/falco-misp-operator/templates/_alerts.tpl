{{/* The alert endpoint (issues 5, 15): the names its Secrets and Service take. */}}

{{/* The Secret holding the senders' token: alerts.tokenSecret.name, or the one the chart creates. */}}
{{- define "falco-misp-operator.alertsTokenSecret" -}}
{{- if .Values.alerts.tokenSecret.name }}
{{- .Values.alerts.tokenSecret.name }}
{{- else if .Values.alerts.tokenSecret.create }}
{{- printf "%s-alerts-token" (include "falco-misp-operator.fullname" .) | trunc 253 }}
{{- end }}
{{- end }}

{{/* The kubernetes.io/tls Secret served (empty: plain HTTP): alerts.tls.secretName, or the one cert-manager writes. */}}
{{- define "falco-misp-operator.alertsTlsSecret" -}}
{{- if .Values.alerts.tls.secretName }}
{{- .Values.alerts.tls.secretName }}
{{- else if .Values.alerts.tls.certManager.enabled }}
{{- printf "%s-alerts-tls" (include "falco-misp-operator.fullname" .) | trunc 253 }}
{{- end }}
{{- end }}

{{/* The URL senders post to, through the chart's Service. */}}
{{- define "falco-misp-operator.alertsUrl" -}}
{{- $scheme := ternary "https" "http" (ne (include "falco-misp-operator.alertsTlsSecret" .) "") }}
{{- printf "%s://%s.%s.svc:%v/alerts" $scheme (include "falco-misp-operator.fullname" .) .Release.Namespace .Values.alerts.port }}
{{- end }}
