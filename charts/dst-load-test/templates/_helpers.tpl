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

{{- define "dst-load-test.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end }}
