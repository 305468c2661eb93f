{{/* The chart's name. */}}
{{- define "shroud.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object. */}}
{{- define "shroud.fullname" -}}
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

{{- define "shroud.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shroud.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shroud.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shroud.labels" -}}
helm.sh/chart: {{ include "shroud.chart" . }}
{{ include "shroud.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "shroud.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shroud.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shroud.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Secrets' names. */}}
{{- define "shroud.identitySecret" -}}
{{- default (printf "%s-identity" (include "shroud.fullname" .)) .Values.identity.existingSecret }}
{{- end }}
{{- define "shroud.adminSecret" -}}
{{- default (printf "%s-admin" (include "shroud.fullname" .)) .Values.admin.existingSecret }}
{{- end }}
{{- define "shroud.upstreamAuthSecret" -}}
{{- default (printf "%s-upstream-auth" (include "shroud.fullname" .)) .Values.upstreamAuth.existingSecret }}
{{- end }}
{{- define "shroud.htpasswdSecret" -}}
{{- default (printf "%s-htpasswd" (include "shroud.fullname" .)) .Values.auth.htpasswd.existingSecret }}
{{- end }}
{{- define "shroud.tlsSecret" -}}
{{- default (printf "%s-tls" (include "shroud.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{- define "shroud.upstreamAuthEnabled" -}}
{{- if or .Values.upstreamAuth.existingSecret .Values.upstreamAuth.dockerconfigjson }}true{{ end }}
{{- end }}
{{- define "shroud.htpasswdEnabled" -}}
{{- if or .Values.auth.htpasswd.existingSecret .Values.auth.htpasswd.content }}true{{ end }}
{{- end }}

{{/* The mirror URL nodes name in hosts.toml. */}}
{{- define "shroud.mirrorURL" -}}
{{- if .Values.containerdHosts.mirrorURL }}
{{- .Values.containerdHosts.mirrorURL }}
{{- else }}
{{- printf "%s://%s.%s.svc.cluster.local:%v" (ternary "https" "http" .Values.tls.enabled) (include "shroud.fullname" .) .Release.Namespace .Values.service.port }}
{{- end }}
{{- end }}

{{/*
What the chart refuses to render, with the reason: several replicas
without the shared tier (they would refuse each other's upload chunks),
TLS without a certificate source.
*/}}
{{- define "shroud.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if and (or (gt $replicas 1) .Values.autoscaling.enabled) (empty .Values.shared.addrs) }}
{{- fail "shroud: more than one replica (replicaCount > 1 or autoscaling.enabled) needs the shared tier: set shared.addrs to your Redis/Valkey (replicas without it refuse each other's upload chunks; README, \"Replicas\")" }}
{{- end }}
{{- if and (or (gt $replicas 1) .Values.autoscaling.enabled) (empty .Values.upstream) }}
{{- fail "shroud: more than one replica needs an upstream registry (upstream): the embedded registry lives in one pod's data dir" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.certManager.enabled) }}
{{- fail "shroud: tls.enabled needs tls.existingSecret (a kubernetes.io/tls Secret) or tls.certManager.enabled" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "shroud: tls.certManager.enabled needs tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and .Values.auth.clientCA.existingSecret (not .Values.tls.enabled) }}
{{- fail "shroud: auth.clientCA (client certificates) needs tls.enabled" }}
{{- end }}
{{- if and .Values.decryptionKeys.existingSecret (empty .Values.decryptionKeys.keys) }}
{{- fail "shroud: decryptionKeys.existingSecret needs decryptionKeys.keys, the Secret's keys that hold private keys" }}
{{- end }}
{{- end }}

{{/* shroud's config file. */}}
{{- define "shroud.config" -}}
{{- $c := dict "listen" (printf ":%v" 5000) "data-dir" "/var/lib/shroud" "identity" (printf "/etc/shroud/identity/%s" .Values.identity.key) }}
{{- $_ := set $c "log-level" .Values.logLevel }}
{{- $_ := set $c "log-format" .Values.logFormat }}
{{- $_ := set $c "cache-entries" .Values.cacheEntries }}
{{- $_ := set $c "upload-ttl" .Values.uploadTTL }}
{{- $_ := set $c "stall-timeout" .Values.stallTimeout }}
{{- $_ := set $c "idle-timeout" .Values.idleTimeout }}
{{- $_ := set $c "max-streams" .Values.maxStreams }}
{{- $_ := set $c "drain-delay" .Values.drainDelay }}
{{- $_ := set $c "drain-timeout" .Values.drainTimeout }}
{{- if .Values.upstream }}{{ $_ := set $c "upstream" .Values.upstream }}{{ end }}
{{- if .Values.upstreams }}{{ $_ := set $c "upstreams" .Values.upstreams }}{{ end }}
{{- if .Values.upstreamCA.existingSecret }}{{ $_ := set $c "upstream-ca" (printf "/etc/shroud/upstream-ca/%s" .Values.upstreamCA.key) }}{{ end }}
{{- if include "shroud.upstreamAuthEnabled" . }}{{ $_ := set $c "upstream-auth-file" "/etc/shroud/upstream-auth/.dockerconfigjson" }}{{ end }}
{{- if .Values.identity.previousSecrets }}
{{- $prev := list }}
{{- range $i, $s := .Values.identity.previousSecrets }}{{ $prev = append $prev (printf "/etc/shroud/previous/%d/identity.pem" $i) }}{{ end }}
{{- $_ := set $c "previous-identities" $prev }}
{{- end }}
{{- if .Values.recipients }}{{ $_ := set $c "recipient" .Values.recipients }}{{ end }}
{{- if .Values.decryptionKeys.existingSecret }}
{{- $keys := list }}
{{- range .Values.decryptionKeys.keys }}{{ $keys = append $keys (printf "/etc/shroud/decryption-keys/%s" .) }}{{ end }}
{{- $_ := set $c "decryption-key" $keys }}
{{- end }}
{{- if .Values.policy }}{{ $_ := set $c "policy" .Values.policy }}{{ end }}
{{- if .Values.encryptOnly }}{{ $_ := set $c "encrypt-only" true }}{{ end }}
{{- if .Values.metrics.enabled }}{{ $_ := set $c "metrics-listen" (printf ":%v" .Values.metrics.port) }}{{ end }}
{{- if .Values.tracing.enabled }}{{ $_ := set $c "tracing" (dict "enabled" true "sample-ratio" .Values.tracing.sampleRatio) }}{{ end }}
{{- if .Values.tls.enabled }}
{{- $_ := set $c "tls-cert" "/etc/shroud/tls/tls.crt" }}
{{- $_ := set $c "tls-key" "/etc/shroud/tls/tls.key" }}
{{- end }}
{{- $auth := dict }}
{{- if include "shroud.htpasswdEnabled" . }}{{ $_ := set $auth "htpasswd" (printf "/etc/shroud/htpasswd/%s" .Values.auth.htpasswd.key) }}{{ end }}
{{- if .Values.auth.jwt }}{{ $_ := set $auth "jwt" .Values.auth.jwt }}{{ end }}
{{- if .Values.auth.clientCA.existingSecret }}{{ $_ := set $auth "client-ca" (printf "/etc/shroud/client-ca/%s" .Values.auth.clientCA.key) }}{{ end }}
{{- if .Values.auth.challenge }}{{ $_ := set $auth "challenge" .Values.auth.challenge }}{{ end }}
{{- if $auth }}{{ $_ := set $c "auth" $auth }}{{ end }}
{{- if .Values.shared.addrs }}
{{- $sh := dict "addrs" .Values.shared.addrs }}
{{- if .Values.shared.masterName }}{{ $_ := set $sh "master-name" .Values.shared.masterName }}{{ end }}
{{- if .Values.shared.username }}{{ $_ := set $sh "username" .Values.shared.username }}{{ end }}
{{- if .Values.shared.existingSecret }}{{ $_ := set $sh "password-file" (printf "/etc/shroud/shared/%s" .Values.shared.passwordKey) }}{{ end }}
{{- if .Values.shared.db }}{{ $_ := set $sh "db" .Values.shared.db }}{{ end }}
{{- if .Values.shared.tls }}{{ $_ := set $sh "tls" true }}{{ end }}
{{- if .Values.shared.prefix }}{{ $_ := set $sh "prefix" .Values.shared.prefix }}{{ end }}
{{- if .Values.shared.ttl }}{{ $_ := set $sh "ttl" .Values.shared.ttl }}{{ end }}
{{- if .Values.shared.timeout }}{{ $_ := set $sh "timeout" .Values.shared.timeout }}{{ end }}
{{- $_ := set $c "shared" $sh }}
{{- end }}
{{- if .Values.admin.enabled }}
{{- $_ := set $c "admin" (dict "listen" (printf ":%v" .Values.admin.port) "token-file" (printf "/etc/shroud/admin/%s" .Values.admin.key) "access-requests" .Values.admin.accessRequests) }}
{{- end }}
{{- toYaml (mergeOverwrite $c (deepCopy .Values.config)) }}
{{- end }}

{{/* A Go duration of the values (30s, 2m, 1m30s, 1h) in whole seconds. */}}
{{- define "shroud.seconds" -}}
{{- $s := toString . }}
{{- if not (regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$" $s) }}
{{- fail (printf "shroud: %q is not a duration of whole h, m and s (e.g. 30s, 2m, 1m30s)" $s) }}
{{- end }}
{{- $total := 0 }}
{{- range $unit, $mult := dict "h" 3600 "m" 60 "s" 1 }}
{{- $m := regexFind (printf "[0-9]+%s" $unit) $s }}
{{- if $m }}{{ $total = add $total (mul (trimSuffix $unit $m | int) $mult) }}{{ end }}
{{- end }}
{{- $total }}
{{- end }}
