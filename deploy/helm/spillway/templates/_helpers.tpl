{{/* The chart's name, truncated for label values. */}}
{{- define "spillway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: <release>-spillway unless the release already says spillway. */}}
{{- define "spillway.fullname" -}}
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

{{/* A component's object name: <fullname>-<service>. Call with (dict "root" $ "service" "gateway"). */}}
{{- define "spillway.componentName" -}}
{{- printf "%s-%s" (include "spillway.fullname" .root) .service | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spillway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "spillway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spillway
{{- end }}

{{/* Selector labels of one component. Call with (dict "root" $ "service" "gateway"). */}}
{{- define "spillway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spillway.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "spillway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spillway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spillway.secretName" -}}
{{- default (printf "%s-secrets" (include "spillway.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "spillway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The configuration with the listen addresses the pods need (0.0.0.0:<port> of each service).
*/}}
{{- define "spillway.config" -}}
{{- $config := deepCopy .Values.config }}
{{- range $section, $service := dict "gateway" "gateway" "counter" "counter" "batch_writer" "batch-writer" "template_warmup" "template-warmup" }}
{{- $settings := default dict (get $config $section) }}
{{- $_ := set $settings "listen" (printf "0.0.0.0:%v" (index $.Values.services $service "port" | int)) }}
{{- $_ := set $config $section $settings }}
{{- end }}
{{- toJson $config }}
{{- end }}

{{/*
One TOML value. Helm reads numbers as floats: whole numbers are written as integers, which
the services' unsigned settings need. Maps become inline tables.
*/}}
{{- define "spillway.tomlValue" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) }}
{{- if eq (float64 (int64 $v)) (float64 $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "spillway.tomlValue" $e }}{{ end }}]
{{- else if kindIs "map" $v }}{ {{- range $i, $k := keys $v | sortAlpha }}{{ if $i }},{{ end }} {{ toJson $k }} = {{ include "spillway.tomlValue" (get $v $k) }}{{ end }} }
{{- else }}{{ fail (printf "config: cannot write %v as TOML" $v) }}
{{- end }}
{{- end }}

{{/*
spillway.toml: one [section] per top-level map, scalar keys at the top; nested maps inline.
*/}}
{{- define "spillway.toml" -}}
# Rendered by the spillway Helm chart from .Values.config.
{{- $config := include "spillway.config" . | fromJson }}
{{- range $key := keys $config | sortAlpha }}
{{- $value := get $config $key }}
{{- if not (kindIs "map" $value) }}
{{ toJson $key }} = {{ include "spillway.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key := keys $config | sortAlpha }}
{{- $value := get $config $key }}
{{- if kindIs "map" $value }}

[{{ toJson $key }}]
{{- range $inner := keys $value | sortAlpha }}
{{ toJson $inner }} = {{ include "spillway.tomlValue" (get $value $inner) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret the migration Job reads DATABASE_URL from. */}}
{{- define "spillway.migrationsSecretName" -}}
{{- default (printf "%s-migrations" (include "spillway.fullname" .)) .Values.migrations.existingSecret }}
{{- end }}

{{/* Whether the gateway's replica count is left to its HorizontalPodAutoscaler. */}}
{{- define "spillway.gatewayAutoscaled" -}}
{{- $gateway := .Values.services.gateway }}
{{- if and $gateway.enabled $gateway.autoscaling.enabled }}true{{ end }}
{{- end }}

{{/*
The most pods of one service at once: its replicas (the HPA's maxReplicas for an autoscaled
gateway) plus the one surge pod of a rolling update. Call with (dict "root" $ "service" "gateway").
*/}}
{{- define "spillway.maxPods" -}}
{{- $settings := index .root.Values.services .service }}
{{- $replicas := int $settings.replicas }}
{{- if and (eq .service "gateway") (include "spillway.gatewayAutoscaled" .root) }}
{{- $replicas = int $settings.autoscaling.maxReplicas }}
{{- end }}
{{- add $replicas 1 }}
{{- end }}

{{/* The database pool of one service's pods. Call with (dict "root" $ "service" "gateway"). */}}
{{- define "spillway.databasePool" -}}
{{- $settings := index .root.Values.services .service }}
{{- $config := default dict .root.Values.config.database }}
{{- int (default (default 16 $config.max_connections) $settings.databaseMaxConnections) }}
{{- end }}

{{/* The most database connections the release may open (see values.yaml, databaseConnections). */}}
{{- define "spillway.databaseConnectionsNeeded" -}}
{{- $total := ternary 1 0 (.Values.migrations.enabled | default false) }}
{{- range $service := keys .Values.services | sortAlpha }}
{{- if (index $.Values.services $service).enabled }}
{{- $component := dict "root" $ "service" $service }}
{{- $total = add $total (mul (include "spillway.maxPods" $component | int) (include "spillway.databasePool" $component | int)) }}
{{- end }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
The topology spread constraints of one service's pods: the service's own list, else the
chart-wide one, each given the labelSelector of the service's pods when it has none.
Call with (dict "root" $ "service" "gateway").
*/}}
{{- define "spillway.topologySpreadConstraints" -}}
{{- $settings := index .root.Values.services .service }}
{{- $constraints := list }}
{{- range (ternary $settings.topologySpreadConstraints .root.Values.topologySpreadConstraints (hasKey $settings "topologySpreadConstraints")) }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "spillway.selectorLabels" $ | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}
