{{/*
Names and labels. Selectors use only name, instance and component: they are immutable on a
Deployment, so nothing that changes on upgrade (chart version, app version) may be in them.
*/}}
{{- define "mcs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mcs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mcs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mcs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mcs.labels" -}}
helm.sh/chart: {{ include "mcs.chart" . }}
{{ include "mcs.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: miitel-crm-sync
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Component labels: call with (dict "root" $ "component" "receiver"). */}}
{{- define "mcs.componentSelectorLabels" -}}
{{ include "mcs.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mcs.componentLabels" -}}
{{ include "mcs.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "mcs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mcs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mcs.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "mcs.secretName" -}}
{{- include "mcs.fullname" . -}}
{{- end -}}

{{- define "mcs.configMapName" -}}
{{- printf "%s-config" (include "mcs.fullname" .) -}}
{{- end -}}

{{- define "mcs.mappingsConfigMapName" -}}
{{- if .Values.mappings.existingConfigMap -}}
{{- .Values.mappings.existingConfigMap -}}
{{- else -}}
{{- printf "%s-mappings" (include "mcs.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "mcs.redisName" -}}
{{- printf "%s-redis" (include "mcs.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Paths inside the pods; the config file refers to the mapping files by these paths. */}}
{{- define "mcs.configDir" -}}/etc/miitel-crm-sync{{- end -}}
{{- define "mcs.configPath" -}}/etc/miitel-crm-sync/config.yaml{{- end -}}
{{- define "mcs.mappingsDir" -}}/etc/miitel-crm-sync/mappings{{- end -}}
{{- define "mcs.redisCADir" -}}/etc/miitel-crm-sync/redis-ca{{- end -}}

{{/*
mcs.envSuffix turns a route or connection name into the upper-case part of an environment
variable name.
*/}}
{{- define "mcs.envSuffix" -}}
{{- regexReplaceAll "[^A-Za-z0-9]" . "_" | upper -}}
{{- end -}}

{{/*
mcs.secretEntry resolves one secret reference from values into where its value lives.
Input: dict root, ref (the values object), path (for messages), env (the variable the pods get),
key (the default key name), generate (whether {generate: true} is allowed here).
Output: YAML of {path, env, name, key, value?, generate?, chart} or nothing when the reference
is not set. A reference is one of
  {value: S [, key: K]}                the chart stores S in its own Secret under K
  {generate: true [, key: K]}          the chart stores a random token, kept across upgrades
  {existingSecret: N [, key: K]}       read from Secret N, key K
  {key: K} with top-level existingSecret set: read from that Secret, key K
*/}}
{{- define "mcs.secretEntry" -}}
{{- $ref := .ref -}}
{{- $root := .root -}}
{{- if kindIs "map" $ref -}}
{{- $key := default .key $ref.key -}}
{{- $existing := $ref.existingSecret -}}
{{- if and (not $existing) $ref.key -}}
{{- $existing = $root.Values.existingSecret -}}
{{- end -}}
{{- if and $ref.value $ref.existingSecret -}}
{{- fail (printf "miitel-crm-sync: %s: set either value or existingSecret, not both" .path) -}}
{{- end -}}
{{- if and $ref.generate $ref.value -}}
{{- fail (printf "miitel-crm-sync: %s: set either value or generate, not both" .path) -}}
{{- end -}}
{{- if and $ref.generate (not .generate) -}}
{{- fail (printf "miitel-crm-sync: %s: generate is only for webhook and admin credentials (routes[].auth, admin); give a value or an existingSecret" .path) -}}
{{- end -}}
{{- if $ref.value -}}
{{- toYaml (dict "path" .path "env" .env "name" (include "mcs.secretName" $root) "key" $key "value" (toString $ref.value) "chart" true) -}}
{{- else if $ref.generate -}}
{{- toYaml (dict "path" .path "env" .env "name" (include "mcs.secretName" $root) "key" $key "generate" true "chart" true) -}}
{{- else if $existing -}}
{{- toYaml (dict "path" .path "env" .env "name" $existing "key" $key "chart" false) -}}
{{- else if $ref.key -}}
{{- fail (printf "miitel-crm-sync: %s: key %q names no Secret: set %s.existingSecret or the top-level existingSecret, or give a value" .path $ref.key .path) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* mcs.connectionSecretFields: the credential fields of each CRM's connection section. */}}
{{- define "mcs.connectionSecretFields" -}}
hubspot: [private_app_token, client_secret, refresh_token]
salesforce: [client_secret, private_key, refresh_token]
{{- end -}}

{{/*
mcs.secretEntries lists every secret the application reads, in one place, so the ConfigMap,
the chart's Secret, the pods' env and the checksums cannot disagree. Every template calls it
first, so it is also where duplicate route and connection names fail the render.
Output: YAML {entries: [...]}.
*/}}
{{- define "mcs.secretEntries" -}}
{{- $root := . -}}
{{- $out := list -}}
{{- range $what, $list := dict "routes" .Values.routes "connections" .Values.connections -}}
{{- $names := dict -}}
{{- range $i, $x := $list -}}
{{- if hasKey $names $x.name -}}
{{- fail (printf "miitel-crm-sync: %s[%d]: name %q is used twice" $what $i $x.name) -}}
{{- end -}}
{{- $_ := set $names $x.name true -}}
{{- end -}}
{{- end -}}
{{- $e := include "mcs.secretEntry" (dict "root" $root "ref" .Values.redis.password "path" "redis.password" "env" "MCS_SECRET_REDIS_PASSWORD" "key" "redis-password") | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" .Values.redis.external.sentinel.password "path" "redis.external.sentinel.password" "env" "MCS_SECRET_REDIS_SENTINEL_PASSWORD" "key" "redis-sentinel-password") | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- range $ri, $route := .Values.routes -}}
{{- $rs := include "mcs.envSuffix" $route.name -}}
{{- $auth := default dict $route.auth -}}
{{- range $i, $ref := $auth.bearer -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" $ref "path" (printf "routes[%d].auth.bearer[%d]" $ri $i) "env" (printf "MCS_SECRET_ROUTE_%s_BEARER_%d" $rs $i) "key" (printf "route-%s-bearer-%d" $route.name $i) "generate" true) | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- end -}}
{{- range $i, $cred := $auth.basic -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" $cred.password "path" (printf "routes[%d].auth.basic[%d].password" $ri $i) "env" (printf "MCS_SECRET_ROUTE_%s_BASIC_%d" $rs $i) "key" (printf "route-%s-basic-%d" $route.name $i) "generate" true) | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- end -}}
{{- range $i, $cred := $auth.headers -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" $cred.value "path" (printf "routes[%d].auth.headers[%d].value" $ri $i) "env" (printf "MCS_SECRET_ROUTE_%s_HEADER_%d" $rs $i) "key" (printf "route-%s-header-%d" $route.name $i) "generate" true) | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- end -}}
{{- range $i, $cred := $auth.payload -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" $cred.value "path" (printf "routes[%d].auth.payload[%d].value" $ri $i) "env" (printf "MCS_SECRET_ROUTE_%s_PAYLOAD_%d" $rs $i) "key" (printf "route-%s-payload-%d" $route.name $i) "generate" true) | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- end -}}
{{- end -}}
{{- $admin := default dict .Values.admin -}}
{{- range $i, $t := $admin.tokens -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" $t.token "path" (printf "admin.tokens[%d].token" $i) "env" (printf "MCS_SECRET_ADMIN_TOKEN_%d" $i) "key" (printf "admin-token-%d" $i) "generate" true) | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- end -}}
{{- range $i, $b := $admin.basic -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" $b.password "path" (printf "admin.basic[%d].password" $i) "env" (printf "MCS_SECRET_ADMIN_BASIC_%d" $i) "key" (printf "admin-basic-%d" $i) "generate" true) | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- end -}}
{{- /* The HMAC key of stored phone numbers: a key that changed would orphan every stored hash, so never generated. */ -}}
{{- $ps := dig "status" "phone_search" "secret" nil (default dict .Values.config) -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" $ps "path" "config.status.phone_search.secret" "env" "MCS_SECRET_STATUS_PHONE_SEARCH" "key" "status-phone-search-secret") | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- range $ci, $conn := .Values.connections -}}
{{- $cs := include "mcs.envSuffix" $conn.name -}}
{{- range $kind, $fields := include "mcs.connectionSecretFields" $root | fromYaml -}}
{{- $sub := get $conn $kind -}}
{{- if $sub -}}
{{- range $f := $fields -}}
{{- $e = include "mcs.secretEntry" (dict "root" $root "ref" (get $sub $f) "path" (printf "connections[%d].%s.%s" $ci $kind $f) "env" (printf "MCS_SECRET_CONNECTION_%s_%s" $cs (upper $f)) "key" (printf "connection-%s-%s" $conn.name (replace "_" "-" $f))) | fromYaml -}}
{{- if $e }}{{ $out = append $out $e }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $keys := dict -}}
{{- range $out -}}
{{- if .chart -}}
{{- $prev := get $keys .key -}}
{{- if and $prev (or (ne (toString $prev.value) (toString .value)) (ne (toString $prev.generate) (toString .generate))) -}}
{{- fail (printf "miitel-crm-sync: %s and %s store different secrets under the same key %q of the chart's Secret: give one of them another key" $prev.path .path .key) -}}
{{- end -}}
{{- $_ := set $keys .key . -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $out -}}
{{- if hasKey $seen .env -}}
{{- fail (printf "miitel-crm-sync: %s and %s both map to environment variable %s: rename a route or connection" (get $seen .env) .path .env) -}}
{{- end -}}
{{- $_ := set $seen .env .path -}}
{{- end -}}
{{- toYaml (dict "entries" $out) -}}
{{- end -}}

{{/* mcs.secretRefYaml is the {env: NAME} that config.yaml holds for the secret at a values path. */}}
{{- define "mcs.secretRefYaml" -}}
{{- $env := "" -}}
{{- range .entries -}}{{- if eq .path $.path -}}{{- $env = .env -}}{{- end -}}{{- end -}}
{{- if $env -}}{{- toYaml (dict "env" $env) -}}{{- end -}}
{{- end -}}

{{/*
mcs.redisConfig is the redis: section of config.yaml. The chart owns it: the address comes
from the bundled StatefulSet or from redis.external, credentials come from the Secret.
*/}}
{{- define "mcs.redisConfig" -}}
{{- $entries := .entries -}}
{{- $v := .root.Values.redis -}}
{{- $ext := $v.external -}}
{{- $modes := list -}}
{{- if $ext.url }}{{ $modes = append $modes "redis.external.url" }}{{ end -}}
{{- if or $ext.sentinel.masterName $ext.sentinel.addrs }}{{ $modes = append $modes "redis.external.sentinel" }}{{ end -}}
{{- if $ext.cluster.addrs }}{{ $modes = append $modes "redis.external.cluster" }}{{ end -}}
{{- if $v.bundled.enabled }}{{ $modes = append $modes "redis.bundled.enabled" }}{{ end -}}
{{- if gt (len $modes) 1 -}}
{{- fail (printf "miitel-crm-sync: choose one Redis: %s are all set" (join ", " $modes)) -}}
{{- end -}}
{{- if eq (len $modes) 0 -}}
{{- fail "miitel-crm-sync: no Redis configured: set redis.external.url (or .sentinel / .cluster) to your Redis, or redis.bundled.enabled=true for a trial (not for production)" -}}
{{- end -}}
{{- $out := dict -}}
{{- if $v.bundled.enabled -}}
{{- $_ := set $out "url" (printf "redis://%s:%d/0" (include "mcs.redisName" .root) (int $v.bundled.port)) -}}
{{- else if $ext.url -}}
{{- $_ := set $out "url" $ext.url -}}
{{- else if $ext.sentinel.masterName -}}
{{- if not $ext.sentinel.addrs -}}{{- fail "miitel-crm-sync: redis.external.sentinel.addrs must list the Sentinels (host:port)" -}}{{- end -}}
{{- $s := dict "master_name" $ext.sentinel.masterName "addrs" $ext.sentinel.addrs -}}
{{- if $ext.sentinel.db }}{{ $_ := set $s "db" $ext.sentinel.db }}{{ end -}}
{{- with include "mcs.secretRefYaml" (dict "entries" $entries "path" "redis.external.sentinel.password") | fromYaml }}{{ $_ := set $s "password" . }}{{ end -}}
{{- $_ := set $out "sentinel" $s -}}
{{- else if $ext.sentinel.addrs -}}
{{- fail "miitel-crm-sync: redis.external.sentinel.masterName is required with sentinel addrs" -}}
{{- else -}}
{{- $_ := set $out "cluster" (dict "addrs" $ext.cluster.addrs) -}}
{{- end -}}
{{- with $v.username }}{{ $_ := set $out "username" . }}{{ end -}}
{{- with include "mcs.secretRefYaml" (dict "entries" $entries "path" "redis.password") | fromYaml }}{{ $_ := set $out "password" . }}{{ end -}}
{{- if and (not $v.bundled.enabled) $ext.tls.enabled -}}
{{- $tls := dict "enabled" true -}}
{{- with $ext.tls.serverName }}{{ $_ := set $tls "server_name" . }}{{ end -}}
{{- if $ext.tls.insecureSkipVerify }}{{ $_ := set $tls "insecure_skip_verify" true }}{{ end -}}
{{- if $ext.tls.existingCASecret -}}
{{- $_ := set $tls "ca_file" (printf "%s/%s" (include "mcs.redisCADir" .root) $ext.tls.caKey) -}}
{{- else if $ext.tls.caFile -}}
{{- $_ := set $tls "ca_file" $ext.tls.caFile -}}
{{- end -}}
{{- $_ := set $out "tls" $tls -}}
{{- end -}}
{{- toYaml (mergeOverwrite $out (deepCopy (default dict $.root.Values.config.redis))) -}}
{{- end -}}

{{/* mcs.routesConfig is the routes: section of config.yaml. */}}
{{- define "mcs.routesConfig" -}}
{{- $root := .root -}}
{{- $entries := .entries -}}
{{- $conns := list -}}
{{- range $root.Values.connections }}{{ $conns = append $conns .name }}{{ end -}}
{{- $out := list -}}
{{- range $ri, $route := $root.Values.routes -}}
{{- $r := dict "name" $route.name -}}
{{- with $route.mapping -}}
{{- if hasPrefix "/" . -}}
{{- $_ := set $r "mapping" . -}}
{{- else -}}
{{- if and (not $root.Values.mappings.existingConfigMap) (not (hasKey $root.Values.mappings.files .)) -}}
{{- fail (printf "miitel-crm-sync: routes[%d] (%s) uses mapping %q, which is not in mappings.files (known: %s)" $ri $route.name . (keys $root.Values.mappings.files | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $_ := set $r "mapping" (printf "%s/%s.yaml" (include "mcs.mappingsDir" $root) .) -}}
{{- end -}}
{{- end -}}
{{- with $route.connection -}}
{{- if not (has . $conns) -}}
{{- fail (printf "miitel-crm-sync: routes[%d] (%s) uses connection %q, which is not in connections" $ri $route.name .) -}}
{{- end -}}
{{- $_ := set $r "connection" . -}}
{{- end -}}
{{- $auth := default dict $route.auth -}}
{{- $a := dict -}}
{{- $list := list -}}
{{- range $i, $_ := $auth.bearer -}}
{{- with include "mcs.secretRefYaml" (dict "entries" $entries "path" (printf "routes[%d].auth.bearer[%d]" $ri $i)) | fromYaml }}{{ $list = append $list . }}{{ end -}}
{{- end -}}
{{- if $list }}{{ $_ := set $a "bearer" $list }}{{ end -}}
{{- $list = list -}}
{{- range $i, $c := $auth.basic -}}
{{- $ref := include "mcs.secretRefYaml" (dict "entries" $entries "path" (printf "routes[%d].auth.basic[%d].password" $ri $i)) | fromYaml -}}
{{- if not $ref }}{{ fail (printf "miitel-crm-sync: routes[%d].auth.basic[%d].password is not set" $ri $i) }}{{ end -}}
{{- $list = append $list (dict "username" $c.username "password" $ref) -}}
{{- end -}}
{{- if $list }}{{ $_ := set $a "basic" $list }}{{ end -}}
{{- $list = list -}}
{{- range $i, $c := $auth.headers -}}
{{- $ref := include "mcs.secretRefYaml" (dict "entries" $entries "path" (printf "routes[%d].auth.headers[%d].value" $ri $i)) | fromYaml -}}
{{- if not $ref }}{{ fail (printf "miitel-crm-sync: routes[%d].auth.headers[%d].value is not set" $ri $i) }}{{ end -}}
{{- $list = append $list (dict "name" $c.name "value" $ref) -}}
{{- end -}}
{{- if $list }}{{ $_ := set $a "headers" $list }}{{ end -}}
{{- $list = list -}}
{{- range $i, $c := $auth.payload -}}
{{- $ref := include "mcs.secretRefYaml" (dict "entries" $entries "path" (printf "routes[%d].auth.payload[%d].value" $ri $i)) | fromYaml -}}
{{- if not $ref }}{{ fail (printf "miitel-crm-sync: routes[%d].auth.payload[%d].value is not set" $ri $i) }}{{ end -}}
{{- $list = append $list (dict "key" $c.key "value" $ref) -}}
{{- end -}}
{{- if $list }}{{ $_ := set $a "payload" $list }}{{ end -}}
{{- with $auth.allow_cidrs }}{{ $_ := set $a "allow_cidrs" . }}{{ end -}}
{{- if $auth.insecure }}{{ $_ := set $a "insecure" true }}{{ end -}}
{{- if and (not $a.bearer) (not $a.basic) (not $a.headers) (not $a.payload) (not $a.insecure) -}}
{{- fail (printf "miitel-crm-sync: routes[%d] (%s) accepts no credential: add auth.bearer, basic, headers or payload (e.g. bearer: [{generate: true}])" $ri $route.name) -}}
{{- end -}}
{{- $_ := set $r "auth" $a -}}
{{- $out = append $out $r -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
mcs.adminConfig is the admin: section of config.yaml: each credential as {env: VAR}, resolved
from the chart's Secret or yours. Empty when no credential is listed.
*/}}
{{- define "mcs.adminConfig" -}}
{{- $entries := .entries -}}
{{- $admin := default dict .root.Values.admin -}}
{{- $out := dict -}}
{{- $list := list -}}
{{- range $i, $t := $admin.tokens -}}
{{- $ref := include "mcs.secretRefYaml" (dict "entries" $entries "path" (printf "admin.tokens[%d].token" $i)) | fromYaml -}}
{{- if not $ref }}{{ fail (printf "miitel-crm-sync: admin.tokens[%d].token is not set" $i) }}{{ end -}}
{{- $list = append $list (dict "token" $ref "role" $t.role) -}}
{{- end -}}
{{- if $list }}{{ $_ := set $out "tokens" $list }}{{ end -}}
{{- $list = list -}}
{{- range $i, $b := $admin.basic -}}
{{- $ref := include "mcs.secretRefYaml" (dict "entries" $entries "path" (printf "admin.basic[%d].password" $i)) | fromYaml -}}
{{- if not $ref }}{{ fail (printf "miitel-crm-sync: admin.basic[%d].password is not set" $i) }}{{ end -}}
{{- $list = append $list (dict "username" $b.username "password" $ref "role" $b.role) -}}
{{- end -}}
{{- if $list }}{{ $_ := set $out "basic" $list }}{{ end -}}
{{- if $out }}{{ toYaml $out }}{{ end -}}
{{- end -}}

{{/* mcs.connectionsConfig is the connections: section of config.yaml. */}}
{{- define "mcs.connectionsConfig" -}}
{{- $root := .root -}}
{{- $entries := .entries -}}
{{- $out := list -}}
{{- range $ci, $conn := $root.Values.connections -}}
{{- $c := omit $conn "hubspot" "salesforce" -}}
{{- range $kind, $fields := include "mcs.connectionSecretFields" $root | fromYaml -}}
{{- $sub := get $conn $kind -}}
{{- if $sub -}}
{{- $s := deepCopy $sub -}}
{{- range $f := $fields -}}
{{- $_ := unset $s $f -}}
{{- with include "mcs.secretRefYaml" (dict "entries" $entries "path" (printf "connections[%d].%s.%s" $ci $kind $f)) | fromYaml }}{{ $_ := set $s $f . }}{{ end -}}
{{- end -}}
{{- $_ := set $c $kind $s -}}
{{- end -}}
{{- end -}}
{{- if and (eq $conn.type "hubspot") (not $conn.hubspot) -}}
{{- fail (printf "miitel-crm-sync: connections[%d] (%s) is type hubspot but has no hubspot: section" $ci $conn.name) -}}
{{- end -}}
{{- if and (eq $conn.type "salesforce") (not $conn.salesforce) -}}
{{- fail (printf "miitel-crm-sync: connections[%d] (%s) is type salesforce but has no salesforce: section" $ci $conn.name) -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
mcs.assertNoSecret fails when the config tree would carry a secret in clear text. Every
secret field must be {env: NAME} or {file: PATH}; the application refuses anything else too,
but failing here keeps the value out of the ConfigMap (and out of the release history).
*/}}
{{- define "mcs.secretFieldNames" -}}password private_app_token client_secret refresh_token private_key value token secret{{- end -}}

{{- define "mcs.assertSecretForm" -}}
{{- $v := .value -}}
{{- $ok := false -}}
{{- if kindIs "invalid" $v -}}
{{- $ok = true -}}
{{- else if kindIs "map" $v -}}
{{- $extra := omit $v "env" "file" -}}
{{- if and (not $extra) (kindIs "string" (default "" $v.env)) (kindIs "string" (default "" $v.file)) (ne (empty $v.env) (empty $v.file)) -}}
{{- $ok = true -}}
{{- end -}}
{{- end -}}
{{- if not $ok -}}
{{- fail (printf "miitel-crm-sync: %s would put a secret into the ConfigMap: give it in values as a secret reference ({value: ...}, {generate: true} or {existingSecret: NAME, key: KEY}), or in extraConfig only as {env: VAR} or {file: PATH}" .path) -}}
{{- end -}}
{{- end -}}

{{- define "mcs.assertNoSecrets" -}}
{{- $path := .path -}}
{{- $names := splitList " " (include "mcs.secretFieldNames" .) -}}
{{- if kindIs "map" .node -}}
{{- range $k, $v := .node -}}
{{- $p := ternary $k (printf "%s.%s" $path $k) (eq $path "") -}}
{{- if has $k $names -}}
{{- include "mcs.assertSecretForm" (dict "value" $v "path" $p) -}}
{{- else if eq $k "bearer" -}}
{{- if not (kindIs "slice" $v) -}}
{{- include "mcs.assertSecretForm" (dict "value" $v "path" $p) -}}
{{- end -}}
{{- range $i, $b := $v -}}
{{- include "mcs.assertSecretForm" (dict "value" $b "path" (printf "%s[%d]" $p $i)) -}}
{{- end -}}
{{- else -}}
{{- if and (kindIs "string" $v) (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]+@" $v) -}}
{{- fail (printf "miitel-crm-sync: %s carries a password in the URL, which would land in the ConfigMap: put the password in redis.password (a secret reference) and leave it out of the URL" $p) -}}
{{- end -}}
{{- include "mcs.assertNoSecrets" (dict "node" $v "path" $p) -}}
{{- end -}}
{{- end -}}
{{- else if kindIs "slice" .node -}}
{{- range $i, $v := .node -}}
{{- include "mcs.assertNoSecrets" (dict "node" $v "path" (printf "%s[%d]" $path $i)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
mcs.configYaml is config.yaml: chart-owned sections (listen addresses, shutdown timeouts,
hot reload, Redis, routes, connections) merged with the pass-through config.* sections, then
extraConfig on top; the result is checked for clear-text secrets.
*/}}
{{- define "mcs.configYaml" -}}
{{- $root := . -}}
{{- $entries := (include "mcs.secretEntries" . | fromYaml).entries -}}
{{- $v := .Values -}}
{{- $cfg := dict -}}
{{- $_ := set $cfg "log" (deepCopy (default dict $v.config.log)) -}}
{{- $server := deepCopy (default dict $v.config.server) -}}
{{- $_ = set $server "listen" (printf ":%d" (int $v.receiver.containerPort)) -}}
{{- $_ = set $server "shutdown_timeout" (printf "%ds" (int $v.receiver.shutdownTimeoutSeconds)) -}}
{{- $_ = set $cfg "server" $server -}}
{{- $_ = set $cfg "redis" (include "mcs.redisConfig" (dict "root" $root "entries" $entries) | fromYaml) -}}
{{- $_ = set $cfg "queue" (deepCopy (default dict $v.config.queue)) -}}
{{- if not (kindIs "invalid" $v.worker.metricsPort) -}}
{{- fail "miitel-crm-sync: worker.metricsPort is gone: both components now serve /metrics, the probes and the admin API on the ops listener, whose port is ops.port (config ops.listen); set ops.port instead" -}}
{{- end -}}
{{- $worker := deepCopy (default dict $v.config.worker) -}}
{{- /* worker.metrics_listen is deprecated for ops.listen: the chart leaves it unset. */ -}}
{{- $_ = set $worker "shutdown_timeout" (printf "%ds" (int $v.worker.shutdownTimeoutSeconds)) -}}
{{- $_ = set $worker "hot_reload" (eq $v.mappings.hotReload true) -}}
{{- $_ = set $cfg "worker" $worker -}}
{{- $_ = set $cfg "routes" (include "mcs.routesConfig" (dict "root" $root "entries" $entries) | fromYamlArray) -}}
{{- $conns := include "mcs.connectionsConfig" (dict "root" $root "entries" $entries) | fromYamlArray -}}
{{- if $conns }}{{ $_ = set $cfg "connections" $conns }}{{ end -}}
{{- $ops := deepCopy (default dict $v.config.ops) -}}
{{- $_ = set $ops "listen" (printf ":%d" (int $v.ops.port)) -}}
{{- $_ = set $cfg "ops" $ops -}}
{{- $admin := include "mcs.adminConfig" (dict "root" $root "entries" $entries) | fromYaml -}}
{{- if $admin }}{{ $_ = set $cfg "admin" $admin }}{{ end -}}
{{- with $v.config.status -}}
{{- $status := deepCopy . -}}
{{- if $status.phone_search -}}
{{- $ps := omit $status.phone_search "secret" -}}
{{- with include "mcs.secretRefYaml" (dict "entries" $entries "path" "config.status.phone_search.secret") | fromYaml }}{{ $_ = set $ps "secret" . }}{{ end -}}
{{- $_ = set $status "phone_search" $ps -}}
{{- end -}}
{{- $_ = set $cfg "status" $status -}}
{{- end -}}
{{- with $v.config.dead_letter }}{{ $_ = set $cfg "dead_letter" (deepCopy .) }}{{ end -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy (default dict $v.extraConfig)) -}}
{{- include "mcs.assertNoSecrets" (dict "node" $cfg "path" "") -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* mcs.mappingsData is the data of the mappings ConfigMap: <name>.yaml -> file text. */}}
{{- define "mcs.mappingsData" -}}
{{- $data := dict -}}
{{- range $name, $text := .Values.mappings.files -}}
{{- $_ := set $data (printf "%s.yaml" $name) (toString $text) -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}

{{/*
mcs.secretChecksum covers what the chart puts in its own Secret. Generated tokens count by key
only: their value is random on `helm template` and kept (lookup) on upgrades, so it must not
roll the pods.
*/}}
{{- define "mcs.secretChecksum" -}}
{{- $parts := list -}}
{{- range (include "mcs.secretEntries" . | fromYaml).entries -}}
{{- if .chart -}}
{{- $parts = append $parts (printf "%s=%s" .key (ternary "<generated>" (toString .value) (eq .generate true))) -}}
{{- end -}}
{{- end -}}
{{- $parts | sortAlpha | join "\n" | sha256sum -}}
{{- end -}}

{{/*
mcs.podAnnotations: checksums that roll the pods when what they read at start-up changes.
Only the worker reads mapping files, and only without hot reload do they roll it: with hot
reload the worker picks up the ConfigMap's symlink swap by itself. A mapping edit never
restarts the receivers, which MiiTel is posting to. Input: dict root, component.
*/}}
{{- define "mcs.podAnnotations" -}}
{{- $root := .root -}}
checksum/config: {{ include "mcs.configYaml" $root | sha256sum }}
{{- if and (eq .component "worker") (not $root.Values.mappings.hotReload) (not $root.Values.mappings.existingConfigMap) }}
checksum/mappings: {{ include "mcs.mappingsData" $root | sha256sum }}
{{- end }}
checksum/secret: {{ include "mcs.secretChecksum" $root }}
{{- end -}}

{{/*
mcs.secretEnv: one env var per secret the component resolves, each from its Secret by key.
The receiver gets the webhook credentials, the worker the CRM credentials, both Redis's, the
admin credentials (each serves the admin API on its ops port) and the phone-search key (both
write call status): the internet-facing receiver never holds CRM tokens. Input: dict root,
component.
*/}}
{{- define "mcs.secretEnv" -}}
{{- $component := .component -}}
{{- range (include "mcs.secretEntries" .root | fromYaml).entries }}
{{- if not (or (and (hasPrefix "routes[" .path) (eq $component "worker")) (and (hasPrefix "connections[" .path) (eq $component "receiver"))) }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .name | quote }}
      key: {{ .key | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* mcs.chartSecretNeeded: "true" when any secret is stored in the chart's own Secret. */}}
{{- define "mcs.chartSecretNeeded" -}}
{{- range (include "mcs.secretEntries" . | fromYaml).entries -}}
{{- if .chart -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
mcs.gracePeriod checks that Kubernetes waits longer than the application drains. Input: dict
component, grace, shutdown, preStop.
*/}}
{{- define "mcs.gracePeriod" -}}
{{- $need := add (int .shutdown) (int .preStop) -}}
{{- if le (int .grace) $need -}}
{{- fail (printf "miitel-crm-sync: %s.terminationGracePeriodSeconds (%d) must be greater than shutdownTimeoutSeconds (%d) + preStopSleepSeconds (%d), or Kubernetes kills the process while it still drains" .component (int .grace) (int .shutdown) (int .preStop)) -}}
{{- end -}}
{{- .grace -}}
{{- end -}}

{{/*
mcs.topologySpread: spread a component's pods over zones and nodes. Input: dict root,
component, spread (values), extra (raw constraints).
*/}}
{{- define "mcs.topologySpread" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $spread := .spread -}}
{{- if $spread.enabled }}
{{- range $spread.topologyKeys }}
- maxSkew: {{ $spread.maxSkew }}
  topologyKey: {{ . }}
  whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "mcs.componentSelectorLabels" (dict "root" $root "component" $component) | nindent 6 }}
  matchLabelKeys:
    - pod-template-hash
{{- end }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
mcs.scrapeAuth is the credential of the ServiceMonitor's endpoint: with config.ops.metrics_auth
/metrics answers 401 without an admin credential, so Prometheus must send one, and the render
fails when none is given rather than deploying a ServiceMonitor that scrapes nothing. Output:
the endpoint's authorization: or basicAuth: field, or nothing.
*/}}
{{- define "mcs.scrapeAuth" -}}
{{- $sm := .Values.metrics.serviceMonitor -}}
{{- $authz := default dict $sm.authorization -}}
{{- $basic := default dict $sm.basicAuth -}}
{{- $on := eq (toString (dig "ops" "metrics_auth" false (default dict .Values.config))) "true" -}}
{{- if and $authz $basic -}}
{{- fail "miitel-crm-sync: metrics.serviceMonitor: set authorization or basicAuth, not both" -}}
{{- end -}}
{{- if and $on (not $authz) (not $basic) -}}
{{- fail "miitel-crm-sync: config.ops.metrics_auth is on: give Prometheus an admin credential in metrics.serviceMonitor.authorization ({credentials: {key: admin-token-0}} for the chart's Secret) or metrics.serviceMonitor.basicAuth" -}}
{{- end -}}
{{- /* A credential without metrics_auth is sent and ignored: it lets you give Prometheus one before turning metrics_auth on. */ -}}
{{- if $authz -}}
{{- $cred := default dict $authz.credentials -}}
{{- if not $cred.key -}}
{{- fail "miitel-crm-sync: metrics.serviceMonitor.authorization.credentials.key is required (the Secret key holding an admin token)" -}}
{{- end -}}
{{- $name := $cred.name -}}
{{- if not $name -}}
{{- $name = include "mcs.secretName" . -}}
{{- $known := list -}}
{{- range (include "mcs.secretEntries" . | fromYaml).entries -}}
{{- if and .chart (hasPrefix "admin.tokens[" .path) }}{{ $known = append $known .key }}{{ end -}}
{{- end -}}
{{- if not (has $cred.key $known) -}}
{{- fail (printf "miitel-crm-sync: metrics.serviceMonitor.authorization.credentials.key %q is not an admin token of the chart's Secret (%s): name your own Secret, or use the key of an admin.tokens entry given as value or generate" $cred.key (ternary "it holds none" (join ", " $known) (empty $known))) -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "authorization" (dict "type" "Bearer" "credentials" (dict "name" $name "key" $cred.key))) -}}
{{- else if $basic -}}
{{- if not (and $basic.username $basic.password) -}}
{{- fail "miitel-crm-sync: metrics.serviceMonitor.basicAuth needs both username and password ({name: SECRET, key: KEY} each)" -}}
{{- end -}}
{{- toYaml (dict "basicAuth" $basic) -}}
{{- end -}}
{{- end -}}

{{/*
mcs.checkOps fails the render on ops settings that would deploy something that cannot work:
metrics_auth with no admin credential locks everyone out of /metrics, one port cannot hold
both listeners, and a NetworkPolicy without metricsFrom shuts Prometheus out. Called from the
ConfigMap, so it runs whatever else is enabled.
*/}}
{{- define "mcs.checkOps" -}}
{{- $on := eq (toString (dig "ops" "metrics_auth" false (default dict .Values.config))) "true" -}}
{{- $admin := default dict .Values.admin -}}
{{- if and $on (not $admin.tokens) (not $admin.basic) -}}
{{- fail "miitel-crm-sync: config.ops.metrics_auth is on but admin lists no credential: nobody, Prometheus included, could read /metrics; add admin.tokens (e.g. [{token: {generate: true}, role: read_only}])" -}}
{{- end -}}
{{- if eq (int .Values.ops.port) (int .Values.receiver.containerPort) -}}
{{- fail (printf "miitel-crm-sync: ops.port and receiver.containerPort are both %d: the ops listener and the webhook port need a port each" (int .Values.ops.port)) -}}
{{- end -}}
{{- if and .Values.networkPolicy.enabled .Values.metrics.serviceMonitor.enabled (not .Values.networkPolicy.metricsFrom) -}}
{{- fail "miitel-crm-sync: networkPolicy.metricsFrom is empty while the ServiceMonitor is on: the NetworkPolicy admits only listed peers to the ops port, so Prometheus could not scrape; list its namespace or pods (e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}])" -}}
{{- end -}}
{{- end -}}
