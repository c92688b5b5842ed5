{{/* The labels of one alert of prometheusrule.yaml: (list $ severity). */}}
{{- define "mailtrain-operator.alert.labels" -}}
{{- $root := index . 0 -}}
{{- with $root.Values.prometheusRule.alertLabels }}
{{- toYaml . }}
{{ end -}}
severity: {{ index . 1 | quote }}
{{- end -}}

{{/* One alert's runbook: (list $ alertname) -> the base URL and the section of docs/runbooks.md
whose heading is the alert's name (GitHub's anchor of a heading is the heading in lower case). */}}
{{- define "mailtrain-operator.alert.runbook" -}}
{{- $root := index . 0 -}}
{{- printf "%s#%s" $root.Values.prometheusRule.runbookBaseUrl (lower (index . 1)) | quote -}}
{{- end -}}
