{{/* The release's full name: the names of the ServiceAccount and of the cluster-scoped RBAC objects. */}}
{{- define "mailtrain-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mailtrain-operator.serviceAccountName" -}}
{{- default (include "mailtrain-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "mailtrain-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The operator pods' selector: fixed for the life of the Deployment (its selector cannot change). */}}
{{- define "mailtrain-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* An image reference from {repository, tag, digest}; the tag defaults to the chart's appVersion. */}}
{{- define "mailtrain-operator.image" -}}
{{- $image := index . 0 -}}
{{- $chart := index . 1 -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default $chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The bundled Redis: its StatefulSet, Service and password Secret share this name. */}}
{{- define "mailtrain-operator.redis.fullname" -}}
{{- printf "%s-redis" (include "mailtrain-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret (key `url`) that pools name in spec.redis.urlSecretRef to use the bundled Redis. */}}
{{- define "mailtrain-operator.redis.urlSecretName" -}}
{{- printf "%s-redis-url" (include "mailtrain-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mailtrain-operator.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* The namespaces that get the bundled Redis's URL Secret: the release's, the watched ones, those of
`pools`, and redis.urlSecret.namespaces. */}}
{{- define "mailtrain-operator.redis.urlNamespaces" -}}
{{- $namespaces := list .Release.Namespace -}}
{{- $namespaces = concat $namespaces .Values.watchNamespaces .Values.redis.urlSecret.namespaces -}}
{{- range .Values.pools -}}
{{- $namespaces = append $namespaces (default $.Release.Namespace .namespace) -}}
{{- end -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}

{{/* Pods of every SenderPool: the labels the operator gives them (mailtrain_operator/pools/names.py). */}}
{{- define "mailtrain-operator.senderPodLabels" -}}
app.kubernetes.io/name: mailtrain-sender
{{- end -}}

{{/* Where sender pods run: every namespace, or the watched ones (a namespaceSelector). */}}
{{- define "mailtrain-operator.watchedNamespaceSelector" -}}
{{- if .Values.watchNamespaces -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values: {{ toJson .Values.watchNamespaces }}
{{- else -}}
{}
{{- end -}}
{{- end -}}
