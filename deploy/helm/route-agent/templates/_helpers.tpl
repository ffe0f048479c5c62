{{/*
The names are fixed: route-agent owns node-wide state (route protocol 201,
the CNI config file, the masquerade), so a cluster runs one release of it.
*/}}

{{- define "route-agent.labels" -}}
app.kubernetes.io/name: route-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "route-agent.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end }}

{{- define "route-agent.tag" -}}
{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "route-agent.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ include "route-agent.tag" . }}
{{- end }}
{{- end }}

{{/* Whether the agent masquerades at all. */}}
{{- define "route-agent.masquerade" -}}
{{- if or .Values.enableIPv4Masquerade .Values.enableIPv6Masquerade }}true{{ end }}
{{- end }}

{{/* Whether the eBPF masquerade runs: it needs bpffs and BPF capabilities. */}}
{{- define "route-agent.bpfMasquerade" -}}
{{- if and (include "route-agent.masquerade" .) .Values.bpf.masquerade }}true{{ end }}
{{- end }}

{{/* Whether the agent reads the ip-masq-agent ConfigMap. */}}
{{- define "route-agent.ipMasqAgent" -}}
{{- if and (include "route-agent.masquerade" .) .Values.ipMasqAgent.enabled }}true{{ end }}
{{- end }}

{{/*
Whether the LoadBalancer address allocator runs: its pools are the
bgp-config's address-pools, so never without BGP.
*/}}
{{- define "route-agent.lbIPAM" -}}
{{- if and .Values.bgp.enabled .Values.lbIPAM.enabled }}true{{ end }}
{{- end }}

{{/* devices as the flag takes them: a comma-separated list. */}}
{{- define "route-agent.devices" -}}
{{- if kindIs "slice" .Values.devices -}}
{{ join "," .Values.devices }}
{{- else -}}
{{ .Values.devices }}
{{- end }}
{{- end }}

{{/*
validate refuses values the agent would refuse at start, naming the value
and what it holds, so a bad install fails at `helm install` rather than as
a crash-looping DaemonSet.
*/}}
{{- define "route-agent.validate" -}}
{{- $v := .Values }}
{{- range $name, $val := dict "autoDirectNodeRoutes" $v.autoDirectNodeRoutes "enableIPv4Masquerade" $v.enableIPv4Masquerade "enableIPv6Masquerade" $v.enableIPv6Masquerade "bpf.masquerade" $v.bpf.masquerade "ipMasqAgent.enabled" $v.ipMasqAgent.enabled "bgp.enabled" $v.bgp.enabled "bgp.announce.podCIDR" $v.bgp.announce.podCIDR "bgp.announce.loadbalancerIP" $v.bgp.announce.loadbalancerIP "lbIPAM.enabled" $v.lbIPAM.enabled "prometheus.enabled" $v.prometheus.enabled "prometheus.serviceMonitor.enabled" $v.prometheus.serviceMonitor.enabled }}
{{- if not (kindIs "bool" $val) }}
{{- fail (printf "%s %q: want true or false" $name (toString $val)) }}
{{- end }}
{{- end }}
{{- if not (has $v.routingMode (list "native" "tunnel")) }}
{{- fail (printf "routingMode %q: want native or tunnel" (toString $v.routingMode)) }}
{{- end }}
{{- if not (has $v.tunnelProtocol (list "vxlan" "geneve")) }}
{{- fail (printf "tunnelProtocol %q: want vxlan or geneve" (toString $v.tunnelProtocol)) }}
{{- end }}
{{- if not (regexMatch "^[0-9]+$" (toString $v.tunnelPort)) }}
{{- fail (printf "tunnelPort %q: want a port number, 0 for the protocol's default" (toString $v.tunnelPort)) }}
{{- else if gt (int $v.tunnelPort) 65535 }}
{{- fail (printf "tunnelPort %q: want a port number, 0 for the protocol's default" (toString $v.tunnelPort)) }}
{{- end }}
{{- range $name, $port := dict "prometheus.port" $v.prometheus.port "healthPort" $v.healthPort }}
{{- if not (regexMatch "^[0-9]+$" (toString $port)) }}
{{- fail (printf "%s %q: want a port number 1-65535" $name (toString $port)) }}
{{- else if or (lt (int $port) 1) (gt (int $port) 65535) }}
{{- fail (printf "%s %q: want a port number 1-65535" $name (toString $port)) }}
{{- end }}
{{- end }}
{{- if and $v.ipv4NativeRoutingCIDR (not (regexMatch "^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]{1,2}$" (toString $v.ipv4NativeRoutingCIDR))) }}
{{- fail (printf "ipv4NativeRoutingCIDR %q: want an IPv4 CIDR such as 10.0.0.0/8" (toString $v.ipv4NativeRoutingCIDR)) }}
{{- end }}
{{- if not (or (kindIs "string" $v.devices) (kindIs "slice" $v.devices)) }}
{{- fail (printf "devices %q: want a device name, a prefix with \"+\", or a list of them" (toString $v.devices)) }}
{{- end }}
{{- if and $v.enableIPv6Masquerade $v.bpf.masquerade }}
{{- fail "enableIPv6Masquerade true: the eBPF masquerade (bpf.masquerade true) is IPv4 only; set bpf.masquerade=false for nftables" }}
{{- end }}
{{- if and $v.prometheus.serviceMonitor.enabled (not $v.prometheus.enabled) }}
{{- fail "prometheus.serviceMonitor.enabled true: needs prometheus.enabled true (the ServiceMonitor scrapes the metrics port)" }}
{{- end }}
{{- if not (has $v.logLevel (list "debug" "info" "warn" "error")) }}
{{- fail (printf "logLevel %q: want debug, info, warn or error" (toString $v.logLevel)) }}
{{- end }}
{{- if and $v.ipMasqAgent.config (not (or (kindIs "map" $v.ipMasqAgent.config) (kindIs "string" $v.ipMasqAgent.config))) }}
{{- fail (printf "ipMasqAgent.config: want a map (nonMasqueradeCIDRs, masqLinkLocal, ...) or its YAML text, got a %s" (kindOf $v.ipMasqAgent.config)) }}
{{- end }}
{{- if and $v.bgp.config (not (or (kindIs "map" $v.bgp.config) (kindIs "string" $v.bgp.config))) }}
{{- /* Only the kind: the config may hold passwords. */}}
{{- fail (printf "bgp.config: want a map (peers, address-pools, ...) or its YAML text, got a %s" (kindOf $v.bgp.config)) }}
{{- end }}
{{- if and $v.cni.confPath (not (hasPrefix "/" (toString $v.cni.confPath))) }}
{{- fail (printf "cni.confPath %q: want an absolute path on the node, or empty" (toString $v.cni.confPath)) }}
{{- end }}
{{- end }}
