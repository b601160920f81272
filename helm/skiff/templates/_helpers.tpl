{{/* Helpers of the skiff platform chart. */}}

{{- define "skiff.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "skiff.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "feature-server"). */}}
{{- define "skiff.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels of every object: call with (dict "ctx" $ "component" "..."). */}}
{{- define "skiff.labels" -}}
{{ include "skiff.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: skiff
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "skiff.chart" .ctx }}
{{- end -}}

{{- define "skiff.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | replace "+" "-" -}}
{{- end -}}

{{/* An image of components/_image.py: call with (dict "ctx" $ "name" "skiff"). */}}
{{- define "skiff.image" -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .ctx.Values.image.registry) .name (include "skiff.imageTag" .ctx) -}}
{{- end -}}

{{/*
A prefix of the skiff root by its role (lake, artifacts, models, feast, rollouts): files/layout.json, the
copy of skiff/layout.py's layout_document() that tests/unit/test_helm.py keeps equal to the code.
Call with (dict "ctx" $ "role" "models").
*/}}
{{- define "skiff.prefix" -}}
{{- $layout := .ctx.Files.Get "files/layout.json" | fromJson -}}
{{- required (printf "files/layout.json names no prefix for %q" .role) (get $layout.prefixes .role) -}}
{{- end -}}

{{/* <root>/<prefix of role>: call with (dict "ctx" $ "role" "lake"). */}}
{{- define "skiff.rootChild" -}}
{{- printf "%s/%s" (trimSuffix "/" .ctx.Values.storage.root) (include "skiff.prefix" .) -}}
{{- end -}}

{{- define "skiff.registry" -}}
{{- $root := required "storage.root is required: the skiff root URI (s3://... or abfs://...), the cluster module's skiff_root output" .Values.storage.root -}}
{{- if .Values.storage.registry -}}
{{- trimSuffix "/" .Values.storage.registry -}}
{{- else -}}
{{- include "skiff.rootChild" (dict "ctx" . "role" "models") -}}
{{- end -}}
{{- end -}}

{{- define "skiff.feastDir" -}}
{{- default (include "skiff.rootChild" (dict "ctx" . "role" "feast")) .Values.featureServer.feastDir -}}
{{- end -}}

{{/*
The Feast folder as `feast serve` reads it: Feast has no abfs:// registry store, so an ADLS folder becomes
the https blob URL its AzureRegistryStore takes (skiff.uri.azure_blob_url does the same in Python).
*/}}
{{- define "skiff.feastDirForFeast" -}}
{{- $dir := include "skiff.feastDir" . -}}
{{- if regexMatch "^abfss?://" $dir -}}
{{- regexReplaceAll "^abfss?://([^@/]+)@([a-z0-9]+)\\.dfs\\.(core\\.[^/]+)(/.*)?$" (trimSuffix "/" $dir) "https://${2}.blob.${3}/${1}${4}" -}}
{{- else -}}
{{- $dir -}}
{{- end -}}
{{- end -}}

{{/* The feature server's feature_store.yaml: on ADLS its file registry goes to Feast's Azure store. */}}
{{- define "skiff.featureStoreYaml" -}}
{{- $config := default (.Files.Get "files/feature_store.yaml") .Values.featureServer.featureStoreYaml -}}
{{- if and (regexMatch "^abfss?://" (include "skiff.feastDir" .)) (not (contains "registry_store_type" $config)) -}}
{{- regexReplaceAll "(?m)^(\\s*)registry_type: file\\s*$" $config "${1}registry_type: file\n${1}registry_store_type: AzureRegistryStore" -}}
{{- else -}}
{{- $config -}}
{{- end -}}
{{- end -}}

{{/* The settings ConfigMap: a fixed name, since compiled pipelines mount it by name (skiff/cluster.py). */}}
{{- define "skiff.settingsName" -}}
{{- .Values.settings.configMapName -}}
{{- end -}}

{{/* Where pods mount skiff.yaml (skiff/cluster.py SETTINGS_MOUNT) and the file SKIFF_CONFIG names. */}}
{{- define "skiff.settingsMount" -}}
/etc/skiff/config
{{- end -}}

{{/* The volume and its mount of the settings ConfigMap, and SKIFF_CONFIG: for pods running skiff. */}}
{{- define "skiff.settingsVolume" -}}
- name: settings
  configMap:
    name: {{ include "skiff.settingsName" . }}
    items:
      - key: skiff.yaml
        path: skiff.yaml
{{- end -}}
{{- define "skiff.settingsVolumeMount" -}}
- name: settings
  mountPath: {{ include "skiff.settingsMount" . }}
  readOnly: true
{{- end -}}
{{- define "skiff.settingsEnv" -}}
- name: SKIFF_CONFIG
  value: {{ printf "%s/skiff.yaml" (include "skiff.settingsMount" .) | quote }}
{{- end -}}

{{/* Name of one of the three service accounts: call with (dict "ctx" $ "account" "serving"). */}}
{{- define "skiff.serviceAccountName" -}}
{{- $sa := index .ctx.Values.serviceAccounts .account -}}
{{- required (printf "serviceAccounts.%s.name is required" .account) $sa.name -}}
{{- end -}}

{{- define "skiff.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "skiff.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container security context serving/deploy/isvc.py gives serving containers (ServingRuntimes). */}}
{{- define "skiff.servingContainerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
readOnlyRootFilesystem: true
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* One OpenMP/BLAS thread per worker: numeric libraries oversubscribe a pod's CPU limit otherwise. */}}
{{- define "skiff.threadEnv" -}}
- name: OMP_NUM_THREADS
  value: "1"
- name: OPENBLAS_NUM_THREADS
  value: "1"
- name: MKL_NUM_THREADS
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{/* imagePullSecrets of a pod spec, or nothing. */}}
{{- define "skiff.pullSecrets" -}}
{{- if .Values.image.pullSecrets -}}
imagePullSecrets:
{{- range .Values.image.pullSecrets }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* A namespace selector peer per namespace name. */}}
{{- define "skiff.namespacePeers" -}}
{{- range $i, $ns := . }}
{{- if $i }}{{ "\n" }}{{ end -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ $ns | quote }}
{{- end }}
{{- end -}}

{{/* RolloutPolicy (skiff/rollout_policy.py) from the camelCase policy values. */}}
{{- define "skiff.rolloutPolicy" -}}
{{- $keys := dict "steps" "steps" "minRequests" "min_requests" "maxErrorRateDelta" "max_error_rate_delta" "maxP99Ratio" "max_p99_ratio" "p99SlackSeconds" "p99_slack_seconds" "maxQualityDrop" "max_quality_drop" "minLabels" "min_labels" "interval" "interval" "timeout" "timeout" -}}
{{- $out := dict -}}
{{- range $k, $v := .Values.rolloutController.policy -}}
{{- $_ := set $out (get $keys $k) $v -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
Every combination of values the templates cannot render correctly fails here with the value named.
*/}}
{{- define "skiff.validateValues" -}}
{{- $errors := list -}}
{{- $root := .Values.storage.root -}}
{{- if and (eq .Values.cloud "aws") $root (not (hasPrefix "s3://" $root)) -}}
{{- $errors = append $errors (printf "storage.root %q: cloud aws needs an s3:// root" $root) -}}
{{- end -}}
{{- if and (eq .Values.cloud "azure") $root (not (regexMatch "^abfss?://" $root)) -}}
{{- $errors = append $errors (printf "storage.root %q: cloud azure needs an abfs:// or abfss:// root" $root) -}}
{{- end -}}
{{- range $k, $v := .Values.storage.options -}}
{{- if regexMatch "(?i)(secret|password|token|credential|sas|account[-_]?key|access[-_]?key|^key$|connection[-_]?string)" $k -}}
{{- $errors = append $errors (printf "storage.options.%s is a credential: bind a cloud identity to the service accounts instead" $k) -}}
{{- end -}}
{{- end -}}
{{- range $account := list "pipeline" "serving" "rollout" "api" "stream" -}}
{{- $sa := index $.Values.serviceAccounts $account -}}
{{- range $k, $v := ($sa.annotations | default dict) -}}
{{- if regexMatch "(?i)(secret|password|token|access[-_]?key|connection[-_]?string)" $k -}}
{{- $errors = append $errors (printf "serviceAccounts.%s.annotations.%s looks like a credential: bind a cloud identity instead" $account $k) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $.Values.cloud "azure") ($sa.annotations | default dict | dig "azure.workload.identity/client-id" "") (ne (toString (dig "azure.workload.identity/use" "" ($sa.podLabels | default dict))) "true") -}}
{{- $errors = append $errors (printf "serviceAccounts.%s.podLabels needs azure.workload.identity/use: \"true\" for its workload identity" $account) -}}
{{- end -}}
{{- end -}}
{{- $names := list .Values.serviceAccounts.pipeline.name .Values.serviceAccounts.serving.name .Values.serviceAccounts.rollout.name .Values.serviceAccounts.api.name .Values.serviceAccounts.stream.name -}}
{{- if ne (len (uniq $names)) 5 -}}
{{- $errors = append $errors (printf "serviceAccounts.*.name must differ (%s): each workload has its own identity and rights" (join ", " $names)) -}}
{{- end -}}
{{- if and .Values.featureServer.enabled (not .Values.featureServer.redis.secretName) -}}
{{- $errors = append $errors "featureServer.redis.secretName is required while featureServer.enabled: the Secret holding the Redis connection string" -}}
{{- end -}}
{{- if and .Values.featureServer.metrics.enabled (eq (int .Values.featureServer.metrics.port) (int .Values.featureServer.port)) -}}
{{- $errors = append $errors "featureServer.metrics.port must differ from featureServer.port" -}}
{{- end -}}
{{- if .Values.rolloutController.enabled -}}
{{- range $k := list "name" "ingressDomain" "prometheusUrl" -}}
{{- if not (get $.Values.rolloutController.environment $k) -}}
{{- $errors = append $errors (printf "rolloutController.environment.%s is required while rolloutController.enabled" $k) -}}
{{- end -}}
{{- end -}}
{{- if not .Values.rolloutController.rollouts -}}
{{- $errors = append $errors "rolloutController.rollouts is empty while rolloutController.enabled: list {model, stableVersion, canaryVersion}" -}}
{{- end -}}
{{- range $i, $r := .Values.rolloutController.rollouts -}}
{{- if eq (int64 $r.stableVersion) (int64 $r.canaryVersion) -}}
{{- $errors = append $errors (printf "rolloutController.rollouts[%d]: canaryVersion equals stableVersion (%d)" $i (int64 $r.stableVersion)) -}}
{{- end -}}
{{- end -}}
{{- $steps := .Values.rolloutController.policy.steps | default (list 100) -}}
{{- if ne (int (last $steps)) 100 -}}
{{- $errors = append $errors (printf "rolloutController.policy.steps must end at 100 (full promotion), got %v" $steps) -}}
{{- end -}}
{{- end -}}
{{- if .Values.api.enabled -}}
{{- if not .Values.settings.kfpHost -}}
{{- $errors = append $errors "settings.kfpHost is required while api.enabled: the API submits pipeline runs to Kubeflow Pipelines instead of running them in its own pod" -}}
{{- end -}}
{{- if not .Values.database.secretName -}}
{{- $errors = append $errors "database.secretName is required while api.enabled: the Secret holding the PostgreSQL URL" -}}
{{- end -}}
{{- if .Values.api.ingress.enabled -}}
{{- if not .Values.api.ingress.host -}}
{{- $errors = append $errors "api.ingress.host is required while api.ingress.enabled" -}}
{{- end -}}
{{- if not .Values.api.ingress.tls.secretName -}}
{{- $errors = append $errors "api.ingress.tls.secretName is required while api.ingress.enabled: bearer tokens never cross a network in clear" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .Values.stream.enabled -}}
{{- if not .Values.stream.consumers -}}
{{- $errors = append $errors "stream.consumers is empty while stream.enabled: list {name, spec, topic}" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $c := .Values.stream.consumers -}}
{{- if hasKey $seen $c.name -}}
{{- $errors = append $errors (printf "stream.consumers[%d]: the name %q is used twice" $i $c.name) -}}
{{- end -}}
{{- $_ := set $seen $c.name true -}}
{{- $sts := printf "%s-stream-%s" (include "skiff.fullname" $) $c.name -}}
{{- $names := list $sts -}}
{{- if $c.partitions -}}
{{- $names = list -}}
{{- range $p := $c.partitions -}}{{- $names = append $names (printf "%s-%s" $sts $p.name) -}}{{- end -}}
{{- end -}}
{{- range $n := $names -}}
{{- if gt (len $n) 52 -}}
{{- $errors = append $errors (printf "stream.consumers[%d]: the StatefulSet name %q is longer than 52 characters (its pods' names and revision labels must fit 63): shorten the name" $i $n) -}}
{{- end -}}
{{- if hasKey $seen (printf "sts/%s" $n) -}}
{{- $errors = append $errors (printf "stream.consumers[%d] (%s): the StatefulSet name %q is taken by another consumer or partition: rename one" $i $c.name $n) -}}
{{- end -}}
{{- $_ := set $seen (printf "sts/%s" $n) true -}}
{{- end -}}
{{- $errors = concat $errors (include "skiff.streamPartitionErrors" (dict "i" $i "c" $c) | splitList "\n" | compact) -}}
{{- $mqtt := list -}}
{{- range $s := $c.spec.sources -}}{{- if eq (toString $s.type) "mqtt" -}}{{- $mqtt = append $mqtt $s -}}{{- end -}}{{- end -}}
{{- if not $mqtt -}}
{{- $errors = append $errors (printf "stream.consumers[%d] (%s): its spec has no mqtt source (the broker it reads)" $i $c.name) -}}
{{- end -}}
{{- range $s := $mqtt -}}
{{- if and (hasKey $s "qos") (eq (int $s.qos) 0) -}}
{{- $errors = append $errors (printf "stream.consumers[%d] (%s): qos 0 loses messages; a persistent session needs qos 1" $i $c.name) -}}
{{- end -}}
{{- if $s.client_id -}}
{{- $errors = append $errors (printf "stream.consumers[%d] (%s): leave client_id out of the spec: each pod's client id is its pod name" $i $c.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\nskiff: invalid values:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
