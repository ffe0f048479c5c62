package lbipam

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"routeagent.io/route-agent/bgp/lbipam/allocator"
)

// Class is the spec.loadBalancerClass the agent serves, besides none.
const Class = "routeagent.io/bgp"

// The annotations honoured, each under MetalLB's name, so that existing
// manifests keep working, and under the agent's own.
const (
	AnnotationPool          = "routeagent.io/address-pool"
	AnnotationPoolMetalLB   = "metallb.universe.tf/address-pool"
	AnnotationIPs           = "routeagent.io/loadBalancerIPs"
	AnnotationIPsMetalLB    = "metallb.universe.tf/loadBalancerIPs"
	AnnotationShared        = "routeagent.io/allow-shared-ip"
	AnnotationSharedMetalLB = "metallb.universe.tf/allow-shared-ip"
)

// Ours reports whether the agent allocates for svc: a LoadBalancer
// Service without a class or with Class.
func Ours(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	return svc.Spec.LoadBalancerClass == nil || *svc.Spec.LoadBalancerClass == Class
}

// RequestFor reads what svc asks for. On error the request still carries
// the ports and sharing keys that could be read, which is all that
// re-reading an existing assignment needs.
func RequestFor(svc *corev1.Service) (allocator.Request, error) {
	var req allocator.Request
	for _, p := range svc.Spec.Ports {
		proto := string(p.Protocol)
		if proto == "" {
			proto = string(corev1.ProtocolTCP)
		}
		req.Ports = append(req.Ports, allocator.Port{Protocol: proto, Port: p.Port})
	}
	var errs []error
	var err error
	if req.SharingKey, err = annotation(svc, AnnotationSharedMetalLB, AnnotationShared); err != nil {
		errs = append(errs, err)
	}
	if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
		req.BackendKey = labels.Set(svc.Spec.Selector).String()
	}
	if req.Pool, err = annotation(svc, AnnotationPoolMetalLB, AnnotationPool); err != nil {
		errs = append(errs, err)
	}
	if req.Addrs, err = requestedAddrs(svc); err != nil {
		errs = append(errs, err)
	}
	if req.Families, err = families(svc, req.Addrs); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return req, joinErrs(errs)
	}
	return req, nil
}

func joinErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

// annotation returns the value of an annotation written under either of
// its names. Both names with different values is an error rather than a
// silent choice.
func annotation(svc *corev1.Service, metallb, ours string) (string, error) {
	a, aok := svc.Annotations[metallb]
	b, bok := svc.Annotations[ours]
	switch {
	case aok && bok && a != b:
		return "", fmt.Errorf("annotations %s %q and %s %q disagree: set one", metallb, a, ours, b)
	case bok:
		return b, nil
	}
	return a, nil
}

func requestedAddrs(svc *corev1.Service) ([]netip.Addr, error) {
	ann, err := annotation(svc, AnnotationIPsMetalLB, AnnotationIPs)
	if err != nil {
		return nil, err
	}
	name := AnnotationIPs
	if _, ok := svc.Annotations[AnnotationIPs]; !ok {
		name = AnnotationIPsMetalLB
	}
	spec := strings.TrimSpace(svc.Spec.LoadBalancerIP)
	if ann != "" && spec != "" {
		return nil, fmt.Errorf("spec.loadBalancerIP %q and annotation %s %q both request addresses: set one", spec, name, ann)
	}
	if spec != "" {
		a, err := parseAddr(spec)
		if err != nil {
			return nil, fmt.Errorf("spec.loadBalancerIP %q: %w", spec, err)
		}
		return []netip.Addr{a}, nil
	}
	addrs, err := ParseAddrList(ann)
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %w", name, err)
	}
	return addrs, nil
}

// ParseAddrList parses the value of the loadBalancerIPs annotation: IP
// addresses separated by commas, at most one per family. Blank means no
// address requested.
func ParseAddrList(s string) ([]netip.Addr, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Addr
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("empty address in %q", s)
		}
		a, err := parseAddr(part)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", s, err)
		}
		for _, prev := range out {
			if prev.Is4() == a.Is4() {
				return nil, fmt.Errorf("%q: %s and %s are of the same family: give at most one address per family", s, prev, a)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("invalid IP address %q", s)
	case a.Zone() != "":
		return netip.Addr{}, fmt.Errorf("address %q has a zone, which a LoadBalancer address cannot have", s)
	case a.Is4In6():
		// Would be taken for IPv6 and miss the IPv4 pools.
		return netip.Addr{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address, write it as IPv4", s)
	}
	return a, nil
}

// families returns the families svc wants, primary first. The API server
// fills spec.ipFamilies from spec.ipFamilyPolicy; the fallbacks serve
// objects that did not pass through it.
func families(svc *corev1.Service, requested []netip.Addr) ([]allocator.Family, error) {
	var out []allocator.Family
	for i, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			out = append(out, allocator.IPv4)
		case corev1.IPv6Protocol:
			out = append(out, allocator.IPv6)
		default:
			return nil, fmt.Errorf("spec.ipFamilies[%d]: unknown IP family %q", i, f)
		}
	}
	if len(out) == 0 {
		for _, a := range requested {
			out = append(out, allocator.FamilyOf(a))
		}
	}
	if len(out) == 0 {
		for _, s := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				out = append(out, allocator.FamilyOf(a))
			}
		}
	}
	if len(out) == 0 {
		out = []allocator.Family{allocator.IPv4}
	}
	p := svc.Spec.IPFamilyPolicy
	if p != nil && *p == corev1.IPFamilyPolicyRequireDualStack && len(out) == 1 {
		other := allocator.IPv6
		if out[0] == allocator.IPv6 {
			other = allocator.IPv4
		}
		out = append(out, other)
	}
	return out, nil
}

// ingressAddrs returns the addresses in svc's status, skipping anything
// that is not an IP address (a hostname set by another implementation).
func ingressAddrs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil && a.Zone() == "" {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func ingressFor(addrs []netip.Addr) []corev1.LoadBalancerIngress {
	var out []corev1.LoadBalancerIngress
	for _, a := range addrs {
		out = append(out, corev1.LoadBalancerIngress{IP: a.String()})
	}
	return out
}
