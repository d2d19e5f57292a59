{{/* The chart name, and the release's full name (the release name when it holds it). */}}
{{- define "nem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nem.fullname" -}}
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

{{/* Selects the agent pods: stable across upgrades (a DaemonSet selector is immutable). */}}
{{- define "nem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nem.labels" -}}
{{ include "nem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nem.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nem.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nem.driftTokenSecret" -}}
{{- default (printf "%s-drift-token" (include "nem.fullname" .)) .Values.drift.token.existingSecret }}
{{- end }}

{{/* Root is needed by the kubelet's pod-resources socket and by a hostPath drift store. */}}
{{- define "nem.root" -}}
{{- if or .Values.podresources.enabled .Values.runAsRoot }}true{{ end }}
{{- end }}

{{/* The agent's --config.file: the values' config with drift.max_body_bytes set. */}}
{{- define "nem.config" -}}
{{- $config := deepCopy (default dict .Values.config) }}
{{- $drift := default dict (get $config "drift") }}
{{- $_ := set $drift "max_body_bytes" (int64 .Values.drift.maxBodyBytes) }}
{{- $_ := set $config "drift" $drift }}
{{- toYaml $config }}
{{- end }}

{{/* The monitors' relabelings: the target named by its node, the agent pod's own labels
dropped so that the workload labels on its series survive (docs/deploy.md "Prometheus"). */}}
{{- define "nem.relabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_node_name]
  targetLabel: instance
- action: labeldrop
  regex: {{ .drop }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}
