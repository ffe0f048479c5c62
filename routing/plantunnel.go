package routing

import (
	"fmt"
	"net/netip"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/routing/tunnel"
)

// tunnelPlan decides the overlay device of tunnel mode and its peers.
type tunnelPlan struct {
	on     bool
	device *tunnel.DeviceSpec
	// underlay6 is the underlay's family: this node's IPv4 InternalIP if it
	// has one, else its IPv6 one; every peer is reached over the same.
	underlay6 bool
	macs      map[[6]byte]string // which node a MAC belongs to
}

func planTunnel(s *snapshot.Snapshot, f Facts, o PlanOptions, warnings *[]string) tunnelPlan {
	var t tunnelPlan
	if o.Tunnel == nil {
		return t
	}
	local, ok := s.Self.InternalIP(false)
	if !ok {
		local, ok = s.Self.InternalIP(true)
	}
	if !ok {
		*warnings = append(*warnings, fmt.Sprintf("tunnel mode: node %s has no InternalIP for the tunnel to start from; no tunnel", s.Self.Name))
		return t
	}
	t.on, t.underlay6 = true, local.Is6()
	t.device = &tunnel.DeviceSpec{
		Protocol: o.Tunnel.Protocol, Port: o.Tunnel.Port, VNI: o.Tunnel.VNI,
		LocalIP: local, UnderlayIndex: connectedLink(f, local),
	}
	for _, c := range s.Self.PodCIDRs {
		t.device.Addresses = append(t.device.Addresses, gatewayOf(c))
	}
	t.macs = map[[6]byte]string{[6]byte(tunnel.MACFor(local)): s.Self.Name}
	return t
}

// peer returns the tunnel peer through which n's pod CIDR c is reached, or
// why there is none.
func (t tunnelPlan) peer(n *snapshot.Node, c netip.Prefix) (tunnel.Peer, string) {
	ip, ok := n.InternalIP(t.underlay6)
	if !ok {
		return tunnel.Peer{}, fmt.Sprintf("node %s has no InternalIP of the tunnel's family: its pod CIDR %s is not routed through the tunnel", n.Name, c)
	}
	if t.device.Protocol == tunnel.Geneve && (t.underlay6 || c.Addr().Is6()) {
		return tunnel.Peer{}, fmt.Sprintf("node %s's pod CIDR %s: Geneve carries IPv4 pod CIDRs over an IPv4 underlay only (see routing.Encap); use --tunnel-protocol vxlan", n.Name, c)
	}
	mac := [6]byte(tunnel.MACFor(ip))
	if other, ok := t.macs[mac]; ok && other != n.Name {
		return tunnel.Peer{}, fmt.Sprintf("nodes %s and %s would share the tunnel MAC %s (their addresses end in the same 32 bits): %s is not routed through the tunnel",
			other, n.Name, tunnel.MACFor(ip), c)
	}
	t.macs[mac] = n.Name
	return tunnel.Peer{NodeIP: ip, Gateway: gatewayOf(c)}, ""
}

// encap is what a route to peer carries: nothing for VXLAN, whose FDB
// entries name the peer; for Geneve, whose device has none, the peer's
// address and the VNI.
func (t tunnelPlan) encap(peer tunnel.Peer) Encap {
	if t.device.Protocol != tunnel.Geneve {
		return Encap{}
	}
	vni := t.device.VNI
	if vni == 0 {
		vni = tunnel.DefaultVNI
	}
	return Encap{ID: uint64(vni), Dst: peer.NodeIP.Unmap()}
}

// gatewayOf is the first address of a pod CIDR (10.5.114.0 for
// 10.5.114.0/24): the next hop that routes to the CIDR go via through the
// tunnel, as Flannel does. It is never a pod's address.
func gatewayOf(c netip.Prefix) netip.Addr { return c.Masked().Addr() }

// connectedLink is the link of the connected route holding a, 0 if none.
func connectedLink(f Facts, a netip.Addr) int {
	best := -1
	link := 0
	for _, fr := range f.Routes {
		if !fr.Gw.IsValid() && fr.Dst.Contains(a) && fr.Dst.Bits() > best {
			best, link = fr.Dst.Bits(), fr.LinkIndex
		}
	}
	return link
}
