{{/* mcs.hpa: an autoscaling/v2 HPA for a component. Input: dict root, component, values. */}}
{{- define "mcs.hpa" -}}
{{- $a := .values.autoscaling -}}
{{- if $a.enabled }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "miitel-crm-sync: %s.autoscaling.minReplicas (%d) is above maxReplicas (%d)" .component (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- if not (or $a.targetCPUUtilizationPercentage $a.targetMemoryUtilizationPercentage) }}
{{- fail (printf "miitel-crm-sync: %s.autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" .component) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "mcs.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mcs.componentLabels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "mcs.fullname" .root }}-{{ .component }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    {{- with $a.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
    {{- with $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
  {{- with $a.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* mcs.pdb: a policy/v1 PodDisruptionBudget for a component. Input: dict root, component, values. */}}
{{- define "mcs.pdb" -}}
{{- $p := .values.podDisruptionBudget -}}
{{- if $p.enabled }}
{{- if and (not (kindIs "invalid" $p.minAvailable)) (not (kindIs "invalid" $p.maxUnavailable)) }}
{{- fail (printf "miitel-crm-sync: %s.podDisruptionBudget: set minAvailable or maxUnavailable, not both" .component) }}
{{- end }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "mcs.fullname" .root }}-{{ .component }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mcs.componentLabels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  {{- if not (kindIs "invalid" $p.minAvailable) }}
  minAvailable: {{ $p.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "mcs.componentSelectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* mcs.egressRules: DNS, Redis, (worker) HTTPS to the CRMs, and networkPolicy.egress.extra. */}}
{{- define "mcs.egressRules" -}}
{{- $root := .root -}}
{{- $e := $root.Values.networkPolicy.egress -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if $root.Values.redis.bundled.enabled }}
- ports:
    - port: {{ $root.Values.redis.bundled.port }}
      protocol: TCP
  to:
    - podSelector:
        matchLabels:
          {{- include "mcs.componentSelectorLabels" (dict "root" $root "component" "redis") | nindent 10 }}
{{- else }}
- ports:
    - port: {{ $e.redisPort }}
      protocol: TCP
  {{- with $e.redisTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if .crm }}
- ports:
    - port: 443
      protocol: TCP
  {{- with $e.crmTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- with $e.extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
mcs.opsIngressRule: the ops port (metrics, probes, admin API) admits Prometheus
(networkPolicy.metricsFrom), admins' tools (networkPolicy.opsFrom) and the `helm test` pod,
and nothing else: never the ingress controller, whatever receiverFrom says. The kubelet's
probes and kubectl port-forward do not pass through NetworkPolicies.
*/}}
{{- define "mcs.opsIngressRule" -}}
{{- $np := .Values.networkPolicy -}}
- ports:
    - port: ops
      protocol: TCP
  from:
    {{- with $np.metricsFrom }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $np.opsFrom }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    - podSelector:
        matchLabels:
          {{- include "mcs.componentSelectorLabels" (dict "root" . "component" "test") | nindent 10 }}
{{- end -}}
