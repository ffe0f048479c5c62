package routing

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// toNetlink renders r as the kernel route the agent writes: our protocol,
// unicast, the kernel's default metric, scope link for a device route.
func toNetlink(r Route) netlink.Route {
	f := familyOf(r.Dst.Addr())
	nr := netlink.Route{
		Family:    f.af,
		Dst:       &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
		LinkIndex: r.LinkIndex,
		Table:     tableOrMain(r.Table),
		Protocol:  Protocol,
		Type:      unix.RTN_UNICAST,
		Scope:     netlink.SCOPE_UNIVERSE,
		MTU:       r.MTU,
	}
	if r.Gw.IsValid() {
		nr.Gw = r.Gw.AsSlice()
	} else {
		nr.Scope = f.deviceScope
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	if !r.Encap.IsZero() {
		nr.Encap = &ipEncap{r.Encap}
	}
	return nr
}

// fromNetlink reads a kernel route back as a Route. ok is false when the
// kernel route is not one toNetlink writes (several next hops, an encap, a
// preferred source, another metric or scope...): such a route never equals
// a desired one, so Set replaces or deletes it.
func fromNetlink(nr *netlink.Route) (r Route, ok bool) {
	f := familyByAF(nr.Family)
	if f == nil || nr.Dst == nil || nr.Type != unix.RTN_UNICAST || nr.Priority != f.defaultPriority {
		return Route{}, false
	}
	dst, ok := prefixOf(f, nr.Dst)
	if !ok {
		return Route{}, false
	}
	r = Route{Dst: dst, LinkIndex: nr.LinkIndex, Table: nr.Table, MTU: nr.MTU}.normalize()
	// Only RTNH_F_ONLINK is configuration; the kernel's other flags
	// (linkdown, dead, offload) report state.
	r.OnLink = nr.Flags&int(netlink.FLAG_ONLINK) != 0
	wantScope := f.deviceScope
	if nr.Gw != nil {
		gw, ok := netip.AddrFromSlice(nr.Gw)
		if !ok {
			return Route{}, false
		}
		if f == ipv4 {
			gw = gw.Unmap()
		}
		r.Gw = gw
		wantScope = netlink.SCOPE_UNIVERSE
	}
	if nr.Scope != wantScope {
		return Route{}, false
	}
	if e, ok := nr.Encap.(*ipEncap); ok {
		r.Encap = e.e
	}
	// Whatever else the kernel route carries, toNetlink never writes.
	rest := *nr
	if _, ok := rest.Encap.(*ipEncap); ok {
		rest.Encap = nil
	}
	rest.Family, rest.Dst, rest.Gw, rest.LinkIndex, rest.Table, rest.MTU = 0, nil, nil, 0, 0, 0
	rest.Protocol, rest.Type, rest.Scope, rest.Priority, rest.Flags = 0, 0, 0, 0, 0
	if !reflect.ValueOf(rest).IsZero() {
		return Route{}, false
	}
	return r, true
}

func prefixOf(f *family, n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	if f == ipv4 {
		// The library gives a default route's destination in 16-byte form.
		a = a.Unmap()
	}
	ones, _ := n.Mask.Size()
	p := netip.PrefixFrom(a, ones)
	return p, p.IsValid()
}

// kernelKey is the key the kernel files nr under, as far as the agent's
// routes go; ok is false for routes of another family or without a
// destination.
func kernelKey(nr *netlink.Route) (k RouteKey, ok bool) {
	f := familyByAF(nr.Family)
	if f == nil || nr.Dst == nil {
		return RouteKey{}, false
	}
	dst, ok := prefixOf(f, nr.Dst)
	if !ok {
		return RouteKey{}, false
	}
	return RouteKey{Table: tableOrMain(nr.Table), Dst: dst.Masked()}, true
}

// describeKernelRoute says what a kernel route is, for messages:
// "a route of protocol static (4) via 10.0.0.1 dev eth0".
func describeKernelRoute(nr *netlink.Route, names map[int]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "a route of protocol %s", protocolName(nr.Protocol))
	if nr.Type != unix.RTN_UNICAST {
		fmt.Fprintf(&b, " type %s", routeTypeName(nr.Type))
	}
	if nr.Gw != nil {
		fmt.Fprintf(&b, " via %s", nr.Gw)
	}
	for _, nh := range nr.MultiPath {
		fmt.Fprintf(&b, " nexthop via %s dev %s", nh.Gw, linkName(names, nh.LinkIndex))
	}
	if nr.LinkIndex > 0 {
		fmt.Fprintf(&b, " dev %s", linkName(names, nr.LinkIndex))
	}
	if f := familyByAF(nr.Family); f != nil && nr.Priority != f.defaultPriority {
		fmt.Fprintf(&b, " metric %d", nr.Priority)
	}
	return b.String()
}

func protocolName(p netlink.RouteProtocol) string {
	name := p.String()
	if int(p) == Protocol {
		name = "route-agent"
	}
	if name == fmt.Sprint(int(p)) {
		return name
	}
	return fmt.Sprintf("%s (%d)", name, int(p))
}

func routeTypeName(t int) string {
	switch t {
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_ANYCAST:
		return "anycast"
	}
	return fmt.Sprint(t)
}
