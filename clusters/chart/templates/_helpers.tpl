{{/* Labels on every object of the suite. */}}
{{- define "apparate.labels" -}}
{"app.kubernetes.io/name":"apparate-agent","app.kubernetes.io/part-of":"apparate","app.kubernetes.io/managed-by":"apparate"}
{{- end -}}

{{/* The registry credentials as a docker config.json. */}}
{{- define "apparate.dockerconfigjson" -}}
{{- $c := .Values.imagePullSecretsCrs -}}
{"auths":{{ "{" }}{{ $c.dockerServer | toJson }}:{"username":{{ $c.dockerUsername | toJson }},"password":{{ $c.dockerPassword | toJson }},"auth":{{ printf "%s:%s" $c.dockerUsername $c.dockerPassword | b64enc | toJson }}{{ "}}}" }}
{{- end -}}

{{/* stargz-snapshotter's config.toml: CRI keychain plus a resolver entry for the registry. */}}
{{- define "apparate.snapshotterConfig" -}}
# Managed by apparate: lazy pulling of eStargz images.
[cri_keychain]
enable_keychain = true
image_service_path = "/run/containerd/containerd.sock"

[[resolver.host.{{ .Values.imagePullSecretsCrs.dockerServer | toJson }}.mirrors]]
host = {{ .Values.imagePullSecretsCrs.dockerServer | toJson }}
insecure = {{ .Values.registryInsecure }}
{{ end -}}
