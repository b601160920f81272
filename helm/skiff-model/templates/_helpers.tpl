{{/*
Helpers of the skiff-model chart. The InferenceService mirrors serving/deploy/isvc.py (build_inference_service):
change both together; tests/unit/test_helm.py compares them.
*/}}

{{/* The InferenceService name: the model name in lower case with '_' turned into '-' (isvc_name). */}}
{{- define "skiff-model.isvcName" -}}
{{- required "model.name is required: the model's name in the skiff registry" .Values.model.name | lower | replace "_" "-" -}}
{{- end -}}

{{- define "skiff-model.version" -}}
{{- $v := required "model.version is required: the registered version to serve (an integer >= 1)" .Values.model.version -}}
{{- printf "%d" (int64 $v) -}}
{{- end -}}

{{/* The version the spec serves: the canary while there is one (KServe's latest revision), else the stable one. */}}
{{- define "skiff-model.servedVersion" -}}
{{- if ne (toString .Values.canary.version) "<nil>" -}}
{{- printf "%d" (int64 .Values.canary.version) -}}
{{- else -}}
{{- include "skiff-model.version" . -}}
{{- end -}}
{{- end -}}

{{- define "skiff-model.hasCanary" -}}
{{- if ne (toString .Values.canary.version) "<nil>" }}true{{ end -}}
{{- end -}}

{{/* Registry URI: storage.registry, else <storage.root>/models. */}}
{{- define "skiff-model.registry" -}}
{{- $root := required "storage.root is required: the skiff root URI (s3://... or abfs://...), the cluster module's skiff_root output" .Values.storage.root -}}
{{- if .Values.storage.registry -}}
{{- trimSuffix "/" .Values.storage.registry -}}
{{- else -}}
{{- printf "%s/models" (trimSuffix "/" $root) -}}
{{- end -}}
{{- end -}}

{{/* GPUs of the predictor: gpu.count, else one for tensorflow and none for sklearn (needs_gpu). */}}
{{- define "skiff-model.gpus" -}}
{{- if ne (toString .Values.gpu.count) "<nil>" -}}
{{- printf "%d" (int64 .Values.gpu.count) -}}
{{- else if eq .Values.model.flavor "tensorflow" -}}
1
{{- else -}}
0
{{- end -}}
{{- end -}}

{{- define "skiff-model.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | replace "+" "-" -}}
{{- end -}}

{{- define "skiff-model.transformerImage" -}}
{{- if .Values.image.transformer -}}
{{- .Values.image.transformer -}}
{{- else -}}
{{- printf "%s/skiff:%s" (trimSuffix "/" .Values.image.registry) (include "skiff-model.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{- define "skiff-model.featureServerUrl" -}}
{{- default (printf "http://feast-feature-server.%s.svc.cluster.local:6566" .Release.Namespace) .Values.transformer.featureServerUrl -}}
{{- end -}}

{{/* Labels of the InferenceService object (skiff's, plus Helm's release labels). */}}
{{- define "skiff-model.labels" -}}
skiff.io/model: {{ .Values.model.name | quote }}
skiff.io/version: {{ include "skiff-model.servedVersion" . | quote }}
{{- with .Values.environment }}
skiff.io/environment: {{ . | quote }}
{{- end }}
app.kubernetes.io/name: {{ include "skiff-model.isvcName" . }}
app.kubernetes.io/part-of: skiff
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/* Labels of the serving pods: model and version (the PodMonitor and the rollout queries use them), plus
the service account's identity labels (Azure workload identity). */}}
{{- define "skiff-model.podLabels" -}}
{{- $labels := dict "skiff.io/model" (toString .Values.model.name) "skiff.io/version" (include "skiff-model.servedVersion" .) -}}
{{- $labels = merge $labels (.Values.serviceAccount.podLabels | default dict) -}}
{{- toYaml $labels -}}
{{- end -}}

{{- define "skiff-model.resources" -}}
{{- $r := .resources | default dict -}}
{{- $req := dict -}}
{{- $lim := dict -}}
{{- range $k, $v := ($r.requests | default dict) }}{{ if $v }}{{ $_ := set $req $k (toString $v) }}{{ end }}{{ end -}}
{{- range $k, $v := ($r.limits | default dict) }}{{ if $v }}{{ $_ := set $lim $k (toString $v) }}{{ end }}{{ end -}}
{{- if gt (int .gpus) 0 -}}
{{- $_ := set $req "nvidia.com/gpu" (toString .gpus) -}}
{{- $_ := set $lim "nvidia.com/gpu" (toString .gpus) -}}
{{- end -}}
{{- $out := dict -}}
{{- if $req }}{{ $_ := set $out "requests" $req }}{{ end -}}
{{- if $lim }}{{ $_ := set $out "limits" $lim }}{{ end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "skiff-model.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
readOnlyRootFilesystem: true
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "skiff-model.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* One OpenMP/BLAS thread per worker: numeric libraries oversubscribe a pod's CPU limit otherwise. */}}
{{- define "skiff-model.threadEnv" -}}
- name: OMP_NUM_THREADS
  value: "1"
- name: OPENBLAS_NUM_THREADS
  value: "1"
- name: MKL_NUM_THREADS
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end -}}

{{/*
What every serving container reads: the registry (the version's metadata and files) and a root under the
writable /tmp; the image has no skiff.yaml (serving/deploy/isvc.py _serving_env).
*/}}
{{- define "skiff-model.servingEnv" -}}
{{ include "skiff-model.threadEnv" . }}
- name: SKIFF_REGISTRY
  value: {{ include "skiff-model.registry" . | quote }}
- name: SKIFF_ROOT
  value: /tmp/skiff
{{- end -}}

{{/*
A recommender's containers read and write the users' recent items in the Redis online store: the cluster
Feast config and the connection string from the Secret the platform module writes (isvc.py _online_store_env).
*/}}
{{- define "skiff-model.onlineStoreEnv" -}}
- name: SKIFF_FEATURE_STORE_YAML
  value: feature_store.cluster.yaml
- name: SKIFF_REDIS
  valueFrom:
    secretKeyRef:
      key: {{ .Values.recommender.redis.secretKey | quote }}
      name: {{ .Values.recommender.redis.secretName | quote }}
{{- end -}}

{{- define "skiff-model.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "skiff-model.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* imagePullSecrets entries from a list of secret names. */}}
{{- define "skiff-model.pullSecrets" -}}
{{- range . }}
- name: {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
Every combination of values the templates cannot render correctly fails here with the value named.
*/}}
{{- define "skiff-model.validateValues" -}}
{{- $errors := list -}}
{{- $name := .Values.model.name | lower | replace "_" "-" -}}
{{- if and $name (not (regexMatch "^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$" $name)) -}}
{{- $errors = append $errors (printf "model.name %q cannot be an InferenceService name (at most 45 letters, digits, '-' and '_', starting with a letter)" .Values.model.name) -}}
{{- end -}}
{{- $hasCanary := ne (toString .Values.canary.version) "<nil>" -}}
{{- if and (not $hasCanary) (ne (toString .Values.canary.percent) "<nil>") -}}
{{- $errors = append $errors "canary.percent is set without canary.version: name the version that gets the traffic" -}}
{{- end -}}
{{- if and $hasCanary (ne (toString .Values.model.version) "<nil>") (eq (int64 .Values.canary.version) (int64 .Values.model.version)) -}}
{{- $errors = append $errors (printf "canary.version %d equals model.version: a canary must be another version" (int64 .Values.canary.version)) -}}
{{- end -}}
{{- if and $hasCanary (ne .Values.deploymentMode "Serverless") -}}
{{- $errors = append $errors (printf "canary.version needs deploymentMode Serverless: in %s mode KServe ignores canaryTrafficPercent" .Values.deploymentMode) -}}
{{- end -}}
{{- if lt (int .Values.maxReplicas) (max (int .Values.minReplicas) 1 | int) -}}
{{- $errors = append $errors (printf "maxReplicas %d is below minReplicas %d (or 1)" (int .Values.maxReplicas) (int .Values.minReplicas)) -}}
{{- end -}}
{{- if and .Values.transformer.enabled (not .Values.transformer.featureService) -}}
{{- $errors = append $errors "transformer.enabled needs transformer.featureService: the feature service the version records" -}}
{{- end -}}
{{- if and .Values.transformer.enabled (eq .Values.model.flavor "recommender") -}}
{{- $errors = append $errors "transformer.enabled is for a feature service: a recommender gets its own transformer (the users' recent items) without it" -}}
{{- end -}}
{{- if and (not .Values.transformer.enabled) .Values.transformer.featureService -}}
{{- $errors = append $errors "transformer.featureService is set but transformer.enabled is false: enable the transformer or drop the feature service" -}}
{{- end -}}
{{- if and (gt (int (include "skiff-model.gpus" .)) 0) (not .Values.gpu.tolerations) (not .Values.gpu.nodeSelector) -}}
{{- $errors = append $errors "a GPU predictor needs gpu.nodeSelector or gpu.tolerations: GPU nodes are tainted and labelled" -}}
{{- end -}}
{{- range $k, $v := .Values.serviceAccount.annotations -}}
{{- if regexMatch "(?i)(secret|password|token|access[-_]?key|connection[-_]?string)" $k -}}
{{- $errors = append $errors (printf "serviceAccount.annotations.%s looks like a credential: bind a cloud identity instead" $k) -}}
{{- end -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n\nskiff-model: invalid values:\n  - %s\n" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
