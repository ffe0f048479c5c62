package masq

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"routeagent.io/route-agent/cluster/snapshot"
)

// Options are the agent's masquerade flags.
type Options struct {
	// IPv4 and IPv6 turn masquerading on per family
	// (enableIPv4Masquerade, enableIPv6Masquerade).
	IPv4, IPv6 bool
	// NativeRoutingCIDRs are never masqueraded (ipv4NativeRoutingCIDR).
	NativeRoutingCIDRs []netip.Prefix
	// UseLearned adds the prefixes learned over BGP to the routable set,
	// only those carrying LearnedCommunity ("AA:NN") when it is set.
	UseLearned       bool
	LearnedCommunity string
	// PortMin and PortMax bound the source ports masqueraded flows get.
	PortMin, PortMax uint16
}

// Device is a masquerade device: traffic leaving through it gets its
// address.
type Device struct {
	Name  string
	Index int
	// Addr4 and Addr6 are the device's first global address of each
	// family; the zero Addr when it has none.
	Addr4, Addr6 netip.Addr
}

func (d Device) String() string { return d.Name }

// Desired is what the datapath enforces.
type Desired struct {
	Set Set
	// LocalPods are this node's pod CIDRs: only their traffic is
	// masqueraded.
	LocalPods []netip.Prefix
	Devices   []Device
	// IPv4 and IPv6 say which families are masqueraded at all.
	IPv4, IPv6       bool
	PortMin, PortMax uint16
}

// Equal reports whether d and o ask the datapath for the same thing.
func (d Desired) Equal(o Desired) bool {
	return d.Set.Equal(o.Set) && slices.Equal(d.LocalPods, o.LocalPods) && slices.Equal(d.Devices, o.Devices) &&
		d.IPv4 == o.IPv4 && d.IPv6 == o.IPv6 && d.PortMin == o.PortMin && d.PortMax == o.PortMax
}

// PlanDesired decides the datapath's state from the snapshot, the
// options and the masquerade devices found on the node. It is pure.
func PlanDesired(s *snapshot.Snapshot, o Options, devices []Device) (Desired, []string) {
	var warnings []string
	cfg := s.IPMasq.Config
	if !s.IPMasq.InForce() {
		warnings = append(warnings, fmt.Sprintf("ip-masq-agent config %s has never parsed (%v): the defaults are in force", s.IPMasq.Source, s.IPMasq.Err))
	}
	if s.IPMasq.Err != nil && cfg != nil {
		warnings = append(warnings, fmt.Sprintf("ip-masq-agent config %s resourceVersion %s rejected; resourceVersion %s stays in force: %v",
			s.IPMasq.Source, s.IPMasq.ErrVersion, s.IPMasq.AppliedVersion, s.IPMasq.Err))
	}
	in := Inputs{Config: cfg, NativeRoutingCIDRs: o.NativeRoutingCIDRs, UseLearned: o.UseLearned, LearnedCommunity: o.LearnedCommunity}
	for _, n := range s.Nodes {
		for _, c := range n.PodCIDRs {
			in.PodCIDRs = append(in.PodCIDRs, PodCIDR{Node: n.Name, Prefix: c})
		}
		for _, a := range n.InternalIPs {
			in.NodeAddrs = append(in.NodeAddrs, NodeAddr{Node: n.Name, Addr: a})
		}
	}
	for _, r := range s.Learned {
		in.Learned = append(in.Learned, LearnedRoute{Prefix: r.Prefix, Peer: r.Peer, Communities: r.Communities})
	}
	d := Desired{Set: Plan(in), IPv4: o.IPv4, IPv6: o.IPv6, PortMin: o.PortMin, PortMax: o.PortMax, Devices: devices}
	if s.Self != nil {
		d.LocalPods = slices.Clone(s.Self.PodCIDRs)
	} else {
		warnings = append(warnings, fmt.Sprintf("node %s not seen yet: no pod CIDR to masquerade", s.NodeName))
	}
	if len(devices) == 0 {
		warnings = append(warnings, "no masquerade device: pod traffic leaves unmasqueraded")
	}
	for _, dev := range devices {
		if o.IPv4 && !dev.Addr4.IsValid() {
			warnings = append(warnings, fmt.Sprintf("device %s has no IPv4 address: IPv4 pod traffic through it is not masqueraded", dev.Name))
		}
		if o.IPv6 && !dev.Addr6.IsValid() {
			warnings = append(warnings, fmt.Sprintf("device %s has no global IPv6 address: IPv6 pod traffic through it is not masqueraded", dev.Name))
		}
	}
	return d, warnings
}

// Summary is the status line seed 001 shows: "BPF (ip-masq-agent) [eth0,
// eth1] 10.0.0.0/16", the native routing CIDRs last.
func Summary(impl string, devices []Device, native []netip.Prefix) string {
	names := make([]string, len(devices))
	for i, d := range devices {
		names[i] = d.Name
	}
	s := fmt.Sprintf("%s (ip-masq-agent) [%s]", impl, strings.Join(names, ", "))
	for _, p := range native {
		s += " " + p.String()
	}
	return s
}
