{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "podmeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name when
it already contains the chart name, else "<release>-<chart>". Kept to 52
characters so that "-operator" (and a DaemonSet pod's 6-character suffix)
still fit DNS label limits.
*/}}
{{- define "podmeter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "podmeter-0.1.0", for the helm.sh/chart label. */}}
{{- define "podmeter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the pods of one component: stable for the life of a
release (selectors are immutable), so nothing version-like belongs here.
Call with (dict "ctx" $ "component" "agent").
*/}}
{{- define "podmeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podmeter.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of pod templates: the selector labels plus the user's podLabels. No
helm.sh/chart and no version here: a chart bump alone must not restart the
agents (the image reference restarts them when the image changes).
Call with (dict "ctx" $ "component" "agent" "podLabels" .Values.agent.podLabels).
*/}}
{{- define "podmeter.podLabels" -}}
{{ include "podmeter.selectorLabels" . }}
app.kubernetes.io/part-of: podmeter
{{- with .podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of every object the chart makes (never of pod templates).
Call with (dict "ctx" $ "component" "agent"); component may be "".
*/}}
{{- define "podmeter.labels" -}}
helm.sh/chart: {{ include "podmeter.chart" .ctx }}
app.kubernetes.io/name: {{ include "podmeter.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: podmeter
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "podmeter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "podmeter.agent.fullname" -}}
{{- printf "%s-agent" (include "podmeter.fullname" .) }}
{{- end }}

{{- define "podmeter.operator.fullname" -}}
{{- printf "%s-operator" (include "podmeter.fullname" .) }}
{{- end }}

{{- define "podmeter.agent.serviceAccountName" -}}
{{- default (include "podmeter.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- end }}

{{- define "podmeter.operator.serviceAccountName" -}}
{{- default (include "podmeter.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- end }}

{{/*
The label selector of the agents' series in alerts: what the chart's
ServiceMonitor/PodMonitor set (job="<fullname>-agent"), or the user's own.
*/}}
{{- define "podmeter.agentSelector" -}}
{{- default (printf "job=%q" (include "podmeter.agent.fullname" .)) .Values.monitoring.prometheusRule.agentSelector }}
{{- end }}

{{/*
--metrics-auth and, with a tls.secretName, the certificate flags: the same
for the agent and the operator.
*/}}
{{- define "podmeter.metricsAuthArgs" -}}
- --metrics-auth={{ .Values.metricsAuth }}
{{- if and (eq .Values.metricsAuth "kubernetes") .Values.tls.secretName }}
- --tls-cert-file=/etc/podmeter/tls/tls.crt
- --tls-key-file=/etc/podmeter/tls/tls.key
{{- end }}
{{- end }}

{{/* True (non-empty) when a TLS Secret is mounted into the agents and the operator. */}}
{{- define "podmeter.tlsMounted" -}}
{{- if and (eq .Values.metricsAuth "kubernetes") .Values.tls.secretName }}true{{ end }}
{{- end }}

{{/* The probes' scheme: HTTPS when the server checks tokens (the probe paths stay open). */}}
{{- define "podmeter.probeScheme" -}}
{{- if eq .Values.metricsAuth "kubernetes" }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{- define "podmeter.scraper.fullname" -}}
{{- printf "%s-scraper" (include "podmeter.fullname" .) }}
{{- end }}

{{/* The chart's ServiceMonitor/PodMonitor need their own reader (metricsAuth kubernetes and a monitor on). */}}
{{- define "podmeter.scraperNeeded" -}}
{{- if and (eq .Values.metricsAuth "kubernetes") (or .Values.monitoring.serviceMonitor.enabled .Values.monitoring.podMonitor.enabled) }}true{{ end }}
{{- end }}

{{/*
Scheme, bearer token and TLS of a monitor endpoint with metricsAuth
kubernetes: the token of the chart's scraper ServiceAccount (bound to the
metrics-reader ClusterRole), and monitoring.tlsConfig or, when empty,
insecureSkipVerify for the self-signed certificate.
*/}}
{{- define "podmeter.scrapeAuth" -}}
{{- if eq .Values.metricsAuth "kubernetes" }}
scheme: https
authorization:
  type: Bearer
  credentials:
    name: {{ include "podmeter.scraper.fullname" . }}-token
    key: token
tlsConfig:
  {{- toYaml (default (dict "insecureSkipVerify" true) .Values.monitoring.tlsConfig) | nindent 2 }}
{{- else }}
scheme: http
{{- end }}
{{- end }}
