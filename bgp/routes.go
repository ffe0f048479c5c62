package bgp

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	bgpconfig "routeagent.io/route-agent/bgp/config"
)

// RouteStatus is one path exchanged with a peer.
type RouteStatus struct {
	PeerAddress string
	Family      string
	Prefix      netip.Prefix
	NextHop     string
	ASPath      []uint32
	// Communities are the classic communities as "AA:NN". Routes returns
	// them in the canonical order advertised paths are planned with
	// (NewCommunities); routeFrom keeps the order received.
	Communities []string
	// LargeCommunities (RFC 8092) as "A:B:C", sorted numerically, without
	// duplicates.
	LargeCommunities []string
	// LocalPref is nil when the path carries none (eBGP).
	LocalPref *uint32
	// Since is when the speaker received the path, or originated it for
	// advertised paths; GoBGP keeps whole seconds. Zero when not known.
	Since time.Time
}

// Routes lists the paths sent to (advertised) or received from each peer,
// or only peer when it is valid. Advertised paths are shown as the peer
// gets them: after the export policy, with the next hop and AS path GoBGP
// puts on the wire.
func (s *Speaker) Routes(ctx context.Context, advertised bool, peer netip.Addr) ([]RouteStatus, error) {
	s.mu.Lock()
	peers := slices.Collect(maps.Values(s.peers))
	s.mu.Unlock()
	table := api.TableType_ADJ_IN
	if advertised {
		table = api.TableType_ADJ_OUT
	}
	var out []RouteStatus
	for _, p := range peers {
		if peer.IsValid() && p.Address != peer {
			continue
		}
		// A dual-stack session carries both families; list each.
		for _, fam := range p.families() {
			var perr error
			err := s.srv.ListPath(ctx, &api.ListPathRequest{TableType: table, Name: p.Address.String(), Family: fam}, func(d *api.Destination) {
				for _, ap := range d.GetPaths() {
					r, err := routeFrom(ap)
					if err != nil {
						perr = fmt.Errorf("decoding a path of %s from peer %s: %w", d.GetPrefix(), p.Address, err)
						return
					}
					r.PeerAddress, r.Family = p.Address.String(), familyName(fam)
					r.Communities = canonicalCommunities(r.Communities)
					out = append(out, r)
				}
			})
			if err != nil {
				return nil, fmt.Errorf("listing paths of peer %s: %w", p.Address, err)
			}
			if perr != nil {
				return nil, perr
			}
		}
	}
	slices.SortFunc(out, func(a, b RouteStatus) int {
		return cmp.Or(compareAddrStrings(a.PeerAddress, b.PeerAddress), comparePrefixes(a.Prefix, b.Prefix))
	})
	return out, nil
}

// routeFrom reads prefix, next hop and the attributes routectl shows out of
// GoBGP's Any-typed path.
func routeFrom(p *api.Path) (RouteStatus, error) {
	var r RouteStatus
	if age := p.GetAge(); age != nil && age.GetSeconds() > 0 {
		r.Since = age.AsTime()
	}
	nlri, err := p.GetNlri().UnmarshalNew()
	if err != nil {
		return r, err
	}
	ipp, ok := nlri.(*api.IPAddressPrefix)
	if !ok {
		return r, fmt.Errorf("unexpected NLRI %T", nlri)
	}
	a, err := netip.ParseAddr(ipp.GetPrefix())
	if err != nil {
		return r, err
	}
	r.Prefix = netip.PrefixFrom(a, int(ipp.GetPrefixLen()))
	for _, any := range p.GetPattrs() {
		attr, err := any.UnmarshalNew()
		if err != nil {
			return r, err
		}
		switch a := attr.(type) {
		case *api.NextHopAttribute:
			r.NextHop = a.GetNextHop()
		case *api.MpReachNLRIAttribute:
			if len(a.GetNextHops()) > 0 {
				r.NextHop = a.GetNextHops()[0]
			}
		case *api.AsPathAttribute:
			for _, seg := range a.GetSegments() {
				r.ASPath = append(r.ASPath, seg.GetNumbers()...)
			}
		case *api.CommunitiesAttribute:
			for _, c := range a.GetCommunities() {
				r.Communities = append(r.Communities, bgpconfig.Community{ASN: uint16(c >> 16), Value: uint16(c)}.String())
			}
		case *api.LargeCommunitiesAttribute:
			r.LargeCommunities = largeCommunities(a.GetCommunities())
		case *api.LocalPrefAttribute:
			lp := a.GetLocalPref()
			r.LocalPref = &lp
		}
	}
	return r, nil
}

// canonicalCommunities sorts "AA:NN" communities numerically and drops
// duplicates, as NewCommunities does.
func canonicalCommunities(cs []string) []string {
	if len(cs) == 0 {
		return nil
	}
	return strings.Fields(string(canonicalValues(Communities(strings.Join(cs, " ")).Values())))
}

// largeCommunities returns cs as "A:B:C", sorted numerically, without
// duplicates, as NewCommunities does for classic communities.
func largeCommunities(cs []*api.LargeCommunity) []string {
	type large [3]uint32
	vals := make([]large, 0, len(cs))
	for _, c := range cs {
		vals = append(vals, large{c.GetGlobalAdmin(), c.GetLocalData1(), c.GetLocalData2()})
	}
	slices.SortFunc(vals, func(a, b large) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]), cmp.Compare(a[2], b[2]))
	})
	vals = slices.Compact(vals)
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		out = append(out, fmt.Sprintf("%d:%d:%d", v[0], v[1], v[2]))
	}
	return out
}
