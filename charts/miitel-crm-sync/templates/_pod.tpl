{{/*
mcs.podTemplate is the pod template shared by the receiver and the worker: one image, the
subcommand chosen per Deployment. Input: dict root, component ("receiver" | "worker"),
values (that component's values), ports (list of {name, port}), preStop (seconds).
*/}}
{{- define "mcs.podTemplate" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $component := .component -}}
metadata:
  labels:
    {{- include "mcs.componentSelectorLabels" (dict "root" $root "component" $component) | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    {{- include "mcs.podAnnotations" (dict "root" $root "component" $component) | nindent 4 }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "mcs.serviceAccountName" $root }}
  automountServiceAccountToken: false
  # Service links would inject <SERVICE>_PORT variables; a Service named "mcs" would then set
  # MCS_PORT next to the application's own MCS_* settings.
  enableServiceLinks: false
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "mcs.gracePeriod" (dict "component" $component "grace" $v.terminationGracePeriodSeconds "shutdown" $v.shutdownTimeoutSeconds "preStop" .preStop) }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ $component }}
      image: {{ include "mcs.image" $root | quote }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        - {{ $component }}
        - --config
        - {{ include "mcs.configPath" $root }}
        {{- range $v.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      ports:
        {{- range .ports }}
        - name: {{ .name }}
          containerPort: {{ .port }}
          protocol: TCP
        {{- end }}
      env:
        {{- with include "mcs.secretEnv" (dict "root" $root "component" $component) | trim }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- if and $v.resources $v.resources.limits $v.resources.limits.memory }}
        # The Go runtime collects harder before the container's memory limit instead of being OOM-killed.
        - name: GOMEMLIMIT
          valueFrom:
            resourceFieldRef:
              resource: limits.memory
              divisor: "1"
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if gt (int .preStop) 0 }}
      lifecycle:
        preStop:
          sleep:
            seconds: {{ .preStop }}
      {{- end }}
      {{- with $v.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: {{ include "mcs.configPath" $root }}
          subPath: config.yaml
          readOnly: true
        {{- if eq $component "worker" }}
        - name: mappings
          mountPath: {{ include "mcs.mappingsDir" $root }}
          readOnly: true
        {{- end }}
        - name: tmp
          mountPath: /tmp
        {{- if $root.Values.redis.external.tls.existingCASecret }}
        - name: redis-ca
          mountPath: {{ include "mcs.redisCADir" $root }}
          readOnly: true
        {{- end }}
        {{- with $v.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "mcs.configMapName" $root }}
    {{- if eq $component "worker" }}
    # Only the worker renders mappings; the receiver never reads them.
    - name: mappings
      configMap:
        name: {{ include "mcs.mappingsConfigMapName" $root }}
    {{- end }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if $root.Values.redis.external.tls.existingCASecret }}
    - name: redis-ca
      secret:
        secretName: {{ $root.Values.redis.external.tls.existingCASecret }}
    {{- end }}
    {{- with $v.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with include "mcs.topologySpread" (dict "root" $root "component" $component "spread" $v.topologySpread "extra" $v.topologySpreadConstraints) | trim }}
  topologySpreadConstraints:
    {{- . | nindent 4 }}
  {{- end }}
{{- end -}}
