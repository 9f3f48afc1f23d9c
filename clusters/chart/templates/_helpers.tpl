{{/* Labels on every object of the suite. */}}
{{- define "apparate.labels" -}}
{"app.kubernetes.io/name":"apparate-agent","app.kubernetes.io/part-of":"apparate","app.kubernetes.io/managed-by":"apparate"}
{{- end -}}

{{/* The registry credentials as a docker config.json (no entry for an anonymous registry). */}}
{{- define "apparate.dockerconfigjson" -}}
{{- $c := .Values.imagePullSecretsCrs -}}
{{- if or $c.dockerUsername $c.dockerPassword -}}
{"auths":{{ "{" }}{{ $c.dockerServer | toJson }}:{"username":{{ $c.dockerUsername | toJson }},"password":{{ $c.dockerPassword | toJson }},"auth":{{ printf "%s:%s" $c.dockerUsername $c.dockerPassword | b64enc | toJson }}{{ "}}}" }}
{{- else -}}
{"auths":{}}
{{- end -}}
{{- end -}}

{{/* The agent's agent.json: the registry (plain HTTP when registryInsecure), with its private CA. */}}
{{- define "apparate.agentJson" -}}
{{- $server := .Values.imagePullSecretsCrs.dockerServer -}}
{"no_background_fetch":false,"registries":[{{ "{" }}{{ if and .Values.registryCA (not .Values.registryInsecure) }}"ca":{{ .Values.registryCA | toJson }},{{ end }}"url":{{ if .Values.registryInsecure }}{{ printf "http://%s" $server | toJson }}{{ else }}{{ printf "https://%s" $server | toJson }}{{ end }}{{ "}" }}]}
{{- end -}}

{{- define "apparate.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end -}}

{{/* The agent's revision: changes with its configuration, credentials or image. */}}
{{- define "apparate.revision" -}}
{{ printf "%s%s%s" (include "apparate.agentJson" .) (include "apparate.dockerconfigjson" .) (include "apparate.image" .) | sha256sum }}
{{- end -}}
