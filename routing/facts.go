package routing

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Facts reads what the planner needs of the kernel: the main table's unicast
// routes of every protocol but the agent's, and the links. One dump per
// family.
func (k *Kernel) Facts() (Facts, error) {
	links, err := k.links()
	if err != nil {
		return Facts{}, err
	}
	f := Facts{Links: make(map[int]Link, len(links))}
	for i, l := range links {
		f.Links[i] = Link{Name: l.name, Up: l.up}
	}
	err = retryInterrupted(func() error {
		f.Routes, f.Own = f.Routes[:0], f.Own[:0]
		for _, fam := range families {
			filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
			err := k.h.RouteListFilteredIter(fam.af, filter, netlink.RT_FILTER_TABLE, func(nr netlink.Route) bool {
				if nr.Protocol == Protocol {
					if r, ok := fromNetlink(&nr); ok {
						f.Own = append(f.Own, r)
					}
				} else if fr, ok := factRoute(fam, &nr); ok {
					f.Routes = append(f.Routes, fr)
				}
				return true
			})
			if err != nil {
				return fmt.Errorf("listing %s routes: %w", fam.name, err)
			}
		}
		return nil
	})
	return f, err
}

// factRoute converts a kernel route the planner may resolve through: a
// unicast route of another protocol with one next hop.
func factRoute(fam *family, nr *netlink.Route) (FactRoute, bool) {
	if nr.Protocol == Protocol || nr.Type != unix.RTN_UNICAST || len(nr.MultiPath) > 0 {
		return FactRoute{}, false
	}
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if fam == ipv6 {
		dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	if nr.Dst != nil {
		p, ok := prefixOf(fam, nr.Dst)
		if !ok {
			return FactRoute{}, false
		}
		dst = p
	}
	if fam == ipv6 && dst.Addr().IsLinkLocalUnicast() {
		return FactRoute{}, false // fe80::/64 on every link says nothing of reachability
	}
	fr := FactRoute{Dst: dst, LinkIndex: nr.LinkIndex, Metric: nr.Priority}
	if nr.Gw != nil {
		gw, ok := netip.AddrFromSlice(nr.Gw)
		if !ok {
			return FactRoute{}, false
		}
		fr.Gw = gw.Unmap()
	}
	return fr, true
}
