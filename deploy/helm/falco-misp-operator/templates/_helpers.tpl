{{/* Names and labels shared by every template. */}}

{{- define "falco-misp-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "falco-misp-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "falco-misp-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "falco-misp-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "falco-misp-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "falco-misp-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: falco-misp-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "falco-misp-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "falco-misp-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "falco-misp-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The subject every binding names: the operator's ServiceAccount. */}}
{{- define "falco-misp-operator.subject" -}}
- kind: ServiceAccount
  name: {{ include "falco-misp-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* Namespaces where Secrets may be read: rbac.secrets.namespaces, else the watched ones (empty: cluster-wide). */}}
{{- define "falco-misp-operator.secretNamespaces" -}}
{{- $namespaces := .Values.rbac.secrets.namespaces | default .Values.operator.watchNamespaces -}}
{{- if $namespaces }}{{- /* ClusterMispServers' Secrets live in the release namespace (issue 15) */ -}}
{{- $namespaces = append $namespaces .Release.Namespace -}}
{{- end -}}
{{- toJson (uniq $namespaces) -}}
{{- end }}

{{/* Every Falco namespace, deduplicated. */}}
{{- define "falco-misp-operator.falcoNamespaces" -}}
{{- toJson (uniq (prepend .Values.falco.extraNamespaces .Values.falco.namespace)) -}}
{{- end }}

{{/* RBAC rules for the MispFeeds and their Events (cluster-wide or per watched namespace). */}}
{{- define "falco-misp-operator.feedRules" -}}
# Watch the MispFeeds: kopf lists them, then keeps a watch open.
- apiGroups: [falco-misp.io]
  resources: [mispfeeds]
  verbs: [list, watch, patch]  # patch: kopf's finalizer and its progress annotations on each feed
# Write each feed's status (Ready, Degraded, counts, rules hash) through the status subresource.
- apiGroups: [falco-misp.io]
  resources: [mispfeeds/status]
  verbs: [patch]
# MispServers (issue 15): read by the syncs of the feeds naming one, watched for their status check (kopf's
# finalizer: patch), their Reachable/KeyValid status written.
- apiGroups: [falco-misp.io]
  resources: [mispservers]
  verbs: [get, list, watch, patch]
- apiGroups: [falco-misp.io]
  resources: [mispservers/status]
  verbs: [patch]
# Post Events on the MispFeeds (RulesApplied, SourceFailed, RolloutTriggered...).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* RBAC rule for reading the Secrets feeds reference. */}}
{{- define "falco-misp-operator.secretRules" -}}
# Read the MISP API key and CA bundle a feed references (by name: get only, never list or watch).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
  {{- with .Values.rbac.secrets.names }}
  resourceNames: {{ toJson (uniq .) }}
  {{- end }}
{{- end }}
