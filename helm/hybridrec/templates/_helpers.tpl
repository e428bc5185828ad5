{{/*
hybridrec.name: the chart name, or nameOverride; trimmed to 63 characters because it ends up in label values.
*/}}
{{- define "hybridrec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
hybridrec.fullname: the prefix of every object name. "release-chart", or just the release name when it already
contains the chart name (so `helm install hybridrec` gives "hybridrec", not "hybridrec-hybridrec").
*/}}
{{- define "hybridrec.fullname" -}}
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

{{/*
hybridrec.chart: "name-version" for the helm.sh/chart label ("+" is not allowed in label values).
*/}}
{{- define "hybridrec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
hybridrec.labels: the recommended app.kubernetes.io labels on every object of the release.
*/}}
{{- define "hybridrec.labels" -}}
helm.sh/chart: {{ include "hybridrec.chart" . }}
{{ include "hybridrec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hybridrec
{{- end }}

{{/*
hybridrec.selectorLabels: the immutable subset used by the Deployment selector, the PDB and the Service; it must
never change between chart versions, or upgrades fail on the Deployment's immutable selector.
*/}}
{{- define "hybridrec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hybridrec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
hybridrec.serviceAccountName: the ServiceAccount the operator runs as (created or pre-existing).
*/}}
{{- define "hybridrec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-operator" (include "hybridrec.fullname" .)) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
hybridrec.image: "repository:tag", the tag defaulting to the chart's appVersion so chart and operator match.
*/}}
{{- define "hybridrec.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
hybridrec.monitoringEnabled: "true" when a monitoring object should render. Call with
(dict "enabled" <true|false|"auto"> "kind" "ServiceMonitor" "ctx" $). "auto" asks the API server (or
`helm template --api-versions`) whether the prometheus-operator CRD is installed, so installing the chart on a
cluster without prometheus-operator does not fail on an unknown kind.
*/}}
{{- define "hybridrec.monitoringEnabled" -}}
{{- $enabled := toString .enabled }}
{{- if eq $enabled "true" }}true
{{- else if and (eq $enabled "auto") (.ctx.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind)) }}true
{{- end }}
{{- end }}

{{/*
hybridrec.dashboardsNamespace: where the dashboard ConfigMaps go (the Grafana sidecar may watch one namespace only).
*/}}
{{- define "hybridrec.dashboardsNamespace" -}}
{{- default .Release.Namespace .Values.dashboards.namespace }}
{{- end }}
