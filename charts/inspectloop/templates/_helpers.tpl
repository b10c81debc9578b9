{{/* Chart name. */}}
{{- define "inspectloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name prefix of every resource: <release>-<chart>, or the release when it contains the chart name. */}}
{{- define "inspectloop.fullname" -}}
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

{{- define "inspectloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels. */}}
{{- define "inspectloop.labels" -}}
helm.sh/chart: {{ include "inspectloop.chart" . }}
{{ include "inspectloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inspectloop
{{- end -}}

{{- define "inspectloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inspectloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: include "inspectloop.componentLabels" (list . "registry") */}}
{{- define "inspectloop.componentLabels" -}}
{{ include "inspectloop.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "inspectloop.componentSelectorLabels" -}}
{{ include "inspectloop.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Resource name of one component. */}}
{{- define "inspectloop.componentName" -}}
{{- printf "%s-%s" (include "inspectloop.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The inspectloop image, pinned by digest when one is given. */}}
{{- define "inspectloop.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Kafka bootstrap servers: the Strimzi cluster's bootstrap Service or the external list. */}}
{{- define "inspectloop.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{- printf "%s-kafka-bootstrap.%s.svc:9092" (include "inspectloop.componentName" (list . "kafka")) .Release.Namespace -}}
{{- else -}}
{{- .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{- define "inspectloop.registryUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "inspectloop.componentName" (list . "registry")) .Release.Namespace (int .Values.registry.port) -}}
{{- end -}}

{{/* Pod-level security context shared by every inspectloop pod. */}}
{{- define "inspectloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context shared by every container. */}}
{{- define "inspectloop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Environment shared by the inspectloop services (CommonSettings). */}}
{{- define "inspectloop.commonEnv" -}}
- name: HOME
  value: /tmp
- name: INSPECTLOOP_DATA_DIR
  value: {{ .Values.common.dataDir | quote }}
- name: INSPECTLOOP_LOGGING__LEVEL
  value: {{ .Values.common.logLevel | quote }}
- name: INSPECTLOOP_LOGGING__JSON_FORMAT
  value: {{ .Values.common.jsonLogs | quote }}
- name: INSPECTLOOP_BUS__BACKEND
  value: kafka
- name: INSPECTLOOP_BUS__PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: INSPECTLOOP_BUS__KAFKA__BOOTSTRAP_SERVERS
  value: {{ include "inspectloop.kafkaBootstrap" . | quote }}
- name: INSPECTLOOP_BUS__KAFKA__SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: INSPECTLOOP_BUS__KAFKA__REPLICATION_FACTOR
  value: {{ .Values.kafka.replicationFactor | quote }}
{{- end -}}

{{/* Volumes every inspectloop pod gets: a writable /tmp and the data directory.
     include "inspectloop.volumes" (list . "monitor" .Values.monitor.persistence) */}}
{{- define "inspectloop.volumes" -}}
{{- $root := index . 0 -}}
{{- $persistence := index . 2 -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: data
{{- if $persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "inspectloop.componentName" (list $root (index . 1)) }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "inspectloop.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.common.dataDir }}
{{- end -}}

{{/* A PersistentVolumeClaim: include "inspectloop.pvc" (list . "monitor" .Values.monitor.persistence) */}}
{{- define "inspectloop.pvc" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $p := index . 2 -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "inspectloop.componentName" (list $root $component) }}
  labels:
    {{- include "inspectloop.componentLabels" (list $root $component) | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml $p.accessModes | nindent 4 }}
  {{- with $p.storageClass }}
  storageClassName: {{ . | quote }}
  {{- end }}
  resources:
    requests:
      storage: {{ $p.size }}
{{- end -}}

{{/* A PodDisruptionBudget: include "inspectloop.pdb" (list . "monitor" .Values.monitor.podDisruptionBudget) */}}
{{- define "inspectloop.pdb" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $pdb := index . 2 -}}
{{- if $pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "inspectloop.componentName" (list $root $component) }}
  labels:
    {{- include "inspectloop.componentLabels" (list $root $component) | nindent 4 }}
spec:
  maxUnavailable: {{ $pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "inspectloop.componentSelectorLabels" (list $root $component) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* A ServiceAccount without API access: include "inspectloop.serviceAccount" (list . "monitor") */}}
{{- define "inspectloop.serviceAccount" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "inspectloop.componentName" (list $root $component) }}
  labels:
    {{- include "inspectloop.componentLabels" (list $root $component) | nindent 4 }}
automountServiceAccountToken: false
{{- end -}}

{{/* Scheduling fields of a pod spec from a component's values. */}}
{{- define "inspectloop.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
