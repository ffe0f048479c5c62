# route-agent's image: the static route-agent and routectl, nothing else.
# The binaries are built on the host (`make image` builds them with
# CGO_ENABLED=0 into bin/image/ and then this file), so the build needs no
# base image from any registry. No shell: `kubectl exec ... -- routectl
# status` runs routectl directly.
FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="route-agent" \
      org.opencontainers.image.description="Kubernetes node agent routing pod networks natively through the data-centre fabric (BGP, kernel routes, tunnels, eBPF masquerade)" \
      org.opencontainers.image.version="${VERSION}"
COPY bin/image/route-agent bin/image/routectl /usr/bin/
# So that `kubectl exec ... -- routectl` finds it whatever the runtime's
# default.
ENV PATH=/usr/bin
ENTRYPOINT ["/usr/bin/route-agent"]
