package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route is one kernel route the agent wants. It is comparable: two Routes
// are equal exactly when the agent would write the same kernel route for
// them (after Table 254 is read as 0).
type Route struct {
	// Dst is the destination; it must be masked (10.1.2.0/24, not 10.1.2.3/24).
	Dst netip.Prefix
	// Gw is the next hop. The zero Addr makes a device route (scope link).
	Gw netip.Addr
	// LinkIndex is the output device; required.
	LinkIndex int
	// OnLink sets RTNH_F_ONLINK: the kernel takes Gw as reachable on the
	// link even when no connected prefix covers it (tunnel peers).
	OnLink bool
	// Table is the routing table; 0 means main (254).
	Table int
	// MTU is the route's path MTU; 0 leaves it unset.
	MTU int
	// Encap is the route's tunnel key for a flow-based tunnel device
	// (Geneve); the zero Encap means none.
	Encap Encap
}

// RouteKey identifies a route the way the kernel does for the agent's
// routes: one route per table and destination (at the kernel's default
// metric, which the agent always uses).
type RouteKey struct {
	Table int // never 0: main is 254
	Dst   netip.Prefix
}

// Key returns the key of r, with table 0 read as main.
func (r Route) Key() RouteKey {
	return RouteKey{Table: tableOrMain(r.Table), Dst: r.Dst}
}

func (k RouteKey) String() string {
	if k.Table == unix.RT_TABLE_MAIN {
		return k.Dst.String()
	}
	return k.Dst.String() + " table " + strconv.Itoa(k.Table)
}

// String formats r like `ip route`, naming the device by index.
func (r Route) String() string { return r.format(nil) }

// format formats r like `ip route`; names, when it knows the link, gives
// the device its name so that messages say "dev eth0".
func (r Route) format(names map[int]string) string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gw.IsValid() {
		b.WriteString(" via ")
		b.WriteString(r.Gw.String())
	}
	b.WriteString(" dev ")
	b.WriteString(linkName(names, r.LinkIndex))
	if r.OnLink {
		b.WriteString(" onlink")
	}
	if t := tableOrMain(r.Table); t != unix.RT_TABLE_MAIN {
		fmt.Fprintf(&b, " table %d", t)
	}
	if r.MTU != 0 {
		fmt.Fprintf(&b, " mtu %d", r.MTU)
	}
	if !r.Encap.IsZero() {
		b.WriteString(" ")
		b.WriteString(r.Encap.String())
	}
	return b.String()
}

func linkName(names map[int]string, index int) string {
	if name, ok := names[index]; ok {
		return name
	}
	return "if" + strconv.Itoa(index)
}

func tableOrMain(t int) int {
	if t == 0 {
		return unix.RT_TABLE_MAIN
	}
	return t
}

// normalize returns r in the one form Set compares: main as table 0.
func (r Route) normalize() Route {
	if r.Table == unix.RT_TABLE_MAIN {
		r.Table = 0
	}
	return r
}

// check returns why the kernel cannot be given r, or nil.
func (r Route) check() error {
	switch {
	case !r.Dst.IsValid():
		return errors.New("no destination")
	case r.Dst.Addr().Is4In6():
		return fmt.Errorf("destination %s is an IPv4-mapped IPv6 prefix", r.Dst)
	case r.Dst != r.Dst.Masked():
		return fmt.Errorf("destination %s is not masked (%s)", r.Dst, r.Dst.Masked())
	case r.LinkIndex <= 0:
		return errors.New("no output device")
	case r.Gw.IsValid() && r.Gw.Is4() != r.Dst.Addr().Is4():
		return fmt.Errorf("gateway %s is not of the destination's family", r.Gw)
	case r.Gw.IsValid() && (r.Gw.IsUnspecified() || r.Gw.IsMulticast() || r.Gw.Is4In6() || r.Gw == netip.AddrFrom4([4]byte{255, 255, 255, 255})):
		return fmt.Errorf("gateway %s is not a unicast address", r.Gw)
	case r.Table < 0 || r.Table == unix.RT_TABLE_LOCAL:
		// The local table holds the kernel's own local and broadcast routes.
		return fmt.Errorf("table %d cannot hold the agent's routes", r.Table)
	case r.MTU < 0:
		return fmt.Errorf("mtu %d is negative", r.MTU)
	case !r.Encap.IsZero() && !r.Dst.Addr().Is4():
		return fmt.Errorf("encapsulation on an IPv6 route (%s) is not supported", r.Encap)
	case !r.Encap.IsZero():
		return r.Encap.check()
	}
	return nil
}

// family holds what differs between IPv4 and IPv6 routes, so that one code
// path serves both.
type family struct {
	af   int // netlink.FAMILY_V4 or FAMILY_V6
	name string
	// defaultPriority is the metric the kernel gives a route added without
	// one; it is part of the kernel's key for a route, so a route of another
	// protocol at this metric holds the key the agent wants.
	defaultPriority int
	// deviceScope is the scope the kernel reports for a route without a
	// gateway: IPv4 keeps the scope it was given, IPv6 reports universe for
	// every route.
	deviceScope netlink.Scope
}

var (
	ipv4     = &family{af: netlink.FAMILY_V4, name: "IPv4", defaultPriority: 0, deviceScope: netlink.SCOPE_LINK}
	ipv6     = &family{af: netlink.FAMILY_V6, name: "IPv6", defaultPriority: 1024, deviceScope: netlink.SCOPE_UNIVERSE}
	families = []*family{ipv4, ipv6}
)

func familyOf(a netip.Addr) *family {
	if a.Is4() {
		return ipv4
	}
	return ipv6
}

func familyByAF(af int) *family {
	for _, f := range families {
		if f.af == af {
			return f
		}
	}
	return nil
}
