package bgp

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"
)

// RouteStatus is one path exchanged with a peer.
type RouteStatus struct {
	PeerAddress string
	Family      string
	Prefix      netip.Prefix
	NextHop     string
	ASPath      []uint32
	// Communities are the classic communities as "AA:NN".
	Communities []string
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
		fam := familyOf(p.Address)
		var perr error
		err := s.srv.ListPath(ctx, &api.ListPathRequest{TableType: table, Name: p.Address.String(), Family: fam}, func(d *api.Destination) {
			for _, ap := range d.GetPaths() {
				r, err := routeFrom(ap)
				if err != nil {
					perr = fmt.Errorf("decoding a path of %s from peer %s: %w", d.GetPrefix(), p.Address, err)
					return
				}
				r.PeerAddress, r.Family = p.Address.String(), familyName(fam)
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
	slices.SortFunc(out, func(a, b RouteStatus) int {
		return cmp.Or(compareAddrStrings(a.PeerAddress, b.PeerAddress), comparePrefixes(a.Prefix, b.Prefix))
	})
	return out, nil
}

// routeFrom reads prefix, next hop and AS path out of GoBGP's Any-typed path.
func routeFrom(p *api.Path) (RouteStatus, error) {
	var r RouteStatus
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
				r.Communities = append(r.Communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
			}
		}
	}
	return r, nil
}
