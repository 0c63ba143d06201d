{{/* The image reference: repository and tag, the tag defaulting to the chart's appVersion. */}}
{{- define "ebb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
