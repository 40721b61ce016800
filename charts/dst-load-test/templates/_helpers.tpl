{{/* Common labels. */}}
{{- define "dst-load-test.labels" -}}
app.kubernetes.io/part-of: dst-load-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels of one component: include with (list $ "churn"). */}}
{{- define "dst-load-test.selector" -}}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Resource name of one component. */}}
{{- define "dst-load-test.name" -}}
{{- printf "%s-%s" (index . 0).Release.Name (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* A flag map as container args: --k=v, --k for true, nothing for false/null.
Helm reads YAML numbers as float64, which %v prints as 1e+06: whole numbers
are printed as integers. */}}
{{- define "dst-load-test.args" -}}
{{- range $k, $v := . }}
{{- if eq (kindOf $v) "bool" }}
{{- if $v }}
- --{{ $k }}
{{- end }}
{{- else if and (eq (kindOf $v) "float64") (eq (float64 (int64 $v)) $v) }}
- {{ printf "--%s=%d" $k (int64 $v) | quote }}
{{- else if not (eq (toString $v) "<nil>") }}
- {{ printf "--%s=%v" $k $v | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod security: non-root, no privilege, read-only root filesystem. */}}
{{- define "dst-load-test.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "dst-load-test.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Where churn's, the client's and the cleanup hook's pods run. */}}
{{- define "dst-load-test.podPlacement" -}}
securityContext:
  {{- include "dst-load-test.podSecurityContext" . | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Annotations of the pre-delete cleanup hook's objects, at a weight. */}}
{{- define "dst-load-test.cleanupHook" -}}
helm.sh/hook: pre-delete
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}

{{/* Only what churn does, only in the release namespace: check that the
namespace is there, server-side apply Services and Deployments (patch, and
create for the first apply), read them back, and delete them and wait for
their pods on --cleanup-on-exit. */}}
{{- define "dst-load-test.churnRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: [{{ .Release.Namespace | quote }}]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["policy.linkerd.io"]
  resources: ["servers"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["linkerd.io"]
  resources: ["serviceprofiles"]
  verbs: ["get", "list", "create", "patch", "delete"]
{{- end }}

{{/* Read-only, in the release namespace: discover Services by label (and
pods, for --target-pods), and
follow the ground truth (EndpointSlices, churn's stamps on Deployments and
StatefulSets, Servers and ServiceProfiles for profile streams). */}}
{{- define "dst-load-test.clientRules" -}}
- apiGroups: [""]
  resources: ["services", "pods"]
  verbs: ["list", "watch"]
{{- if .Values.client.groundTruth }}
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["list", "watch"]
- apiGroups: ["policy.linkerd.io"]
  resources: ["servers"]
  verbs: ["list", "watch"]
- apiGroups: ["linkerd.io"]
  resources: ["serviceprofiles"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}

{{/* The flags the chart sets itself, per component, with the value to set
instead: in churn.args or client.args they would clash at run time. */}}
{{- define "dst-load-test.checkArgs" -}}
{{- $common := dict
  "namespace" "install the release into that namespace instead (helm install -n NAMESPACE)"
  "admin-addr" "the chart serves probes and metrics on its own port; it is not configurable"
  "log-level" "set log.level instead"
  "log-format" "set log.format instead" }}
{{- $owned := dict
  "churn" (merge (dict "control-plane-ns" "set linkerdNamespace instead") $common)
  "client" (merge (dict
    "destination-addr" "set client.destinationAddr instead"
    "service-label-selector" "set client.serviceLabelSelector instead"
    "target-services" "set client.targetServices instead (it replaces client.serviceLabelSelector)"
    "ground-truth" "set client.groundTruth instead") $common) }}
{{- range $component := list "churn" "client" }}
{{- $args := (index $.Values $component).args | default dict }}
{{- range $flag, $use := index $owned $component }}
{{- if hasKey $args $flag }}
{{- fail (printf "%s.args.%s: the chart sets --%s itself; %s" $component $flag $flag $use) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dst-load-test.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end }}

{{/* The scenario file's text: the string as given, or the map as YAML. */}}
{{- define "dst-load-test.scenarioText" -}}
{{- if kindIs "string" .Values.scenario }}
{{- .Values.scenario }}
{{- else }}
{{- toYaml .Values.scenario }}
{{- end }}
{{- end }}

{{/* Where churn and the client find the scenario file. */}}
{{- define "dst-load-test.scenarioPath" -}}
/etc/dst-load/scenario.yaml
{{- end }}

{{/* A component's args without the keys a scenario file replaces:
include with (list $ "churn"). */}}
{{- define "dst-load-test.componentArgs" -}}
{{- $ := index . 0 }}
{{- $component := index . 1 }}
{{- $args := (index $.Values $component).args | default dict }}
{{- if $.Values.scenario }}
{{- if eq $component "churn" }}
{{- $args = omit $args "stable-services" "stable-endpoints" "oscillate-services" "oscillate-min-endpoints" "oscillate-max-endpoints" "oscillate-hold-duration" "oscillate-min-hold" "oscillate-max-hold" "oscillate-jitter-percent" "oscillate-jitter" "restart-services" "restart-endpoints" "restart-interval" "ephemeral-services" "ephemeral-endpoints" "ephemeral-lifetime" "ephemeral-gap" "statefulset-services" "statefulset-replicas" "statefulset-min-replicas" "statefulset-max-replicas" }}
{{- else }}
{{- $args = omit $args "streams-per-service" "watchers-per-service" "connections" "scenario" }}
{{- end }}
{{- end }}
{{- include "dst-load-test.args" $args }}
{{- end }}

{{/* The pod-template pieces that mount the scenario file: an annotation
that rolls the pods when it changes, the volume and its mount. */}}
{{- define "dst-load-test.scenarioChecksum" -}}
{{- if .Values.scenario }}
annotations:
  dst-load.linkerd.io/scenario-sha256: {{ include "dst-load-test.scenarioText" . | sha256sum }}
{{- end }}
{{- end }}
{{- define "dst-load-test.scenarioVolume" -}}
{{- if .Values.scenario }}
volumes:
  - name: scenario
    configMap:
      name: {{ include "dst-load-test.name" (list . "scenario") }}
{{- end }}
{{- end }}
{{- define "dst-load-test.scenarioMount" -}}
{{- if .Values.scenario }}
volumeMounts:
  - name: scenario
    mountPath: /etc/dst-load
    readOnly: true
{{- end }}
{{- end }}
