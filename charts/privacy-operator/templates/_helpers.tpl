{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "privacy-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release name when it already contains the chart name. */}}
{{- define "privacy-operator.fullname" -}}
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

{{- define "privacy-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "privacy-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "privacy-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "privacy-operator.labels" -}}
helm.sh/chart: {{ include "privacy-operator.chart" . }}
{{ include "privacy-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: privacy-operator
{{- end }}

{{- define "privacy-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "privacy-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository[@digest | :tag] of an image, tag defaulting to the chart's appVersion. */}}
{{- define "privacy-operator.imageRef" -}}
{{- $repo := index . 0 }}{{- $tag := index . 1 }}{{- $digest := index . 2 }}
{{- if $digest }}
{{- printf "%s@%s" $repo $digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{- define "privacy-operator.image" -}}
{{- include "privacy-operator.imageRef" (list .Values.image.repository (default .Chart.AppVersion .Values.image.tag) .Values.image.digest) }}
{{- end }}

{{- define "privacy-operator.workerImage" -}}
{{- $w := .Values.worker.image }}
{{- if $w.repository }}
{{- include "privacy-operator.imageRef" (list $w.repository (default (default .Chart.AppVersion .Values.image.tag) $w.tag) $w.digest) }}
{{- else if or $w.tag $w.digest }}
{{- include "privacy-operator.imageRef" (list .Values.image.repository (default (default .Chart.AppVersion .Values.image.tag) $w.tag) $w.digest) }}
{{- else }}
{{- include "privacy-operator.image" . }}
{{- end }}
{{- end }}

{{- define "privacy-operator.saltSecretName" -}}
{{- default (printf "%s-subject-salt" (include "privacy-operator.fullname" .)) .Values.subjectSalt.secretName }}
{{- end }}

{{/*
The object storage URL the operator gets (PRIVACY_OPERATOR_STORAGE_URL): objectStorage.url, or
one built from provider, bucket and prefix; empty without either.
*/}}
{{- define "privacy-operator.storageURL" -}}
{{- $os := .Values.objectStorage -}}
{{- if $os.url -}}
{{- $os.url -}}
{{- else if $os.bucket -}}
{{- $scheme := get (dict "s3" "s3://" "gcs" "gs://" "azure" "az://" "filesystem" "file://") $os.provider -}}
{{- $bucket := $os.bucket -}}
{{- if eq $os.provider "filesystem" -}}
{{- if not (hasPrefix "/" $bucket) -}}
{{- fail "objectStorage.bucket must be an absolute directory with provider filesystem" -}}
{{- end -}}
{{- $bucket = trimPrefix "/" $bucket -}}
{{- $scheme = "file:///" -}}
{{- end -}}
{{- $prefix := trimAll "/" $os.prefix -}}
{{- if $prefix -}}
{{- printf "%s%s/%s" $scheme (trimSuffix "/" $bucket) $prefix -}}
{{- else -}}
{{- printf "%s%s" $scheme (trimSuffix "/" $bucket) -}}
{{- end -}}
{{- end -}}
{{- end }}
