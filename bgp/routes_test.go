package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"

	bgpconfig "routeagent.io/route-agent/bgp/config"
)

// routesAre checks sp.Routes against want, and that every path's Since
// lies between notBefore (truncated to GoBGP's whole seconds) and now.
func routesAre(ctx context.Context, sp *Speaker, advertised bool, only netip.Addr, notBefore time.Time, want []RouteStatus) func() error {
	return func() error {
		got, err := sp.Routes(ctx, advertised, only)
		if err != nil {
			return err
		}
		for i, r := range got {
			if r.Since.Before(notBefore.Truncate(time.Second)) || r.Since.After(time.Now()) {
				return fmt.Errorf("Routes(advertised=%v): %s from %s: Since %v, want between %v and now",
					advertised, r.Prefix, r.PeerAddress, r.Since, notBefore)
			}
			got[i].Since = time.Time{}
		}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			return fmt.Errorf("Routes(advertised=%v, peer=%v) (-want +got):\n%s", advertised, only, diff)
		}
		return nil
	}
}

// Routes shows what the router receives (advertised: the speaker's own
// paths with the next hop and AS path on the wire) and what it sends.
func TestSpeakerRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real BGP session over loopback")
	}
	ctx := t.Context()
	start := time.Now()
	r := startRouter(t, "router", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	r.originate(t, "10.9.0.0/24", "127.0.0.1")
	sp := newTestSpeaker(t, testLogger(t, "speaker"))
	t.Cleanup(func() { sp.Stop(context.Background()) })
	paths := []Path{path("10.244.1.0/24", "10.0.0.1"), path("10.244.2.0/24", "10.0.0.1")}
	d := Desired{
		Global: Global{ASN: speakerASN, RouterID: netip.MustParseAddr("10.0.0.1")},
		Peers:  []Peer{r.peerOfSpeaker(speakerASN)},
		Paths:  paths,
	}
	if err := sp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	peer := r.addr.String()
	wantAdv := []RouteStatus{
		{PeerAddress: peer, Family: "ipv4/unicast", Prefix: netip.MustParsePrefix("10.244.1.0/24"), NextHop: "10.0.0.1", ASPath: []uint32{speakerASN}},
		{PeerAddress: peer, Family: "ipv4/unicast", Prefix: netip.MustParsePrefix("10.244.2.0/24"), NextHop: "10.0.0.1", ASPath: []uint32{speakerASN}},
	}
	wantRecv := []RouteStatus{
		{PeerAddress: peer, Family: "ipv4/unicast", Prefix: netip.MustParsePrefix("10.9.0.0/24"), NextHop: "127.0.0.1", ASPath: []uint32{routerASN}},
	}
	eventually(t, "advertised and received paths", all(
		routesAre(ctx, sp, true, netip.Addr{}, start, wantAdv),
		routesAre(ctx, sp, false, netip.Addr{}, start, wantRecv),
		routesAre(ctx, sp, false, r.addr, start, wantRecv),
		routesAre(ctx, sp, false, netip.MustParseAddr("192.0.2.1"), start, nil),
	))
}

// Routes shows each path's communities in canonical order, its large
// communities, and LOCAL_PREF where the session carries it (iBGP), both
// ways: as the eBGP and the iBGP router get the speaker's paths, and as
// they sent theirs.
func TestSpeakerRoutesAttributes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real BGP sessions over loopback")
	}
	// GoBGP keys peers by address, so the second router is 127.0.0.2.
	needLoopback2(t)
	ctx := t.Context()
	start := time.Now()
	ebgp := startRouter(t, "ebgp", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	ibgp := startRouter(t, "ibgp", "127.0.0.2", "10.0.0.253", speakerASN, speakerASN)

	// Each router sends a path with communities out of order and
	// repeated, and large communities likewise.
	com := func(asn, val uint16) uint32 { return uint32(asn)<<16 | uint32(val) }
	for _, o := range []struct {
		r      *router
		prefix string
	}{{ebgp, "10.9.0.0/24"}, {ibgp, "10.8.0.0/24"}} {
		p := apiPath(Path{Prefix: netip.MustParsePrefix(o.prefix), NextHop: o.r.addr})
		p.Pattrs = append(p.Pattrs,
			mustAny(&api.CommunitiesAttribute{Communities: []uint32{com(65000, 200), com(64512, 7), com(65000, 100), com(65000, 200)}}),
			mustAny(&api.LargeCommunitiesAttribute{Communities: []*api.LargeCommunity{
				{GlobalAdmin: 4200000000, LocalData1: 2, LocalData2: 1},
				{GlobalAdmin: 4200000000, LocalData1: 1, LocalData2: 9},
				{GlobalAdmin: 4200000000, LocalData1: 2, LocalData2: 1},
			}}))
		if _, err := o.r.srv.AddPath(ctx, &api.AddPathRequest{Path: p}); err != nil {
			t.Fatalf("%s: AddPath(%s): %v", o.r.name, o.prefix, err)
		}
	}

	sp := newTestSpeaker(t, testLogger(t, "speaker"))
	t.Cleanup(func() { sp.Stop(context.Background()) })
	comms := NewCommunities(bgpconfig.Community{ASN: 64513, Value: 200}, bgpconfig.Community{ASN: 64513, Value: 100})
	d := Desired{
		Global: Global{ASN: speakerASN, RouterID: netip.MustParseAddr("10.0.0.1")},
		Peers:  []Peer{ebgp.peerOfSpeaker(speakerASN), ibgp.peerOfSpeaker(speakerASN)},
		Paths: []Path{
			{Prefix: netip.MustParsePrefix("10.244.1.0/24"), NextHop: netip.MustParseAddr("10.0.0.1"), Attrs: Attrs{LocalPref: 200, Communities: comms}},
			path("10.244.2.0/24", "10.0.0.1"),
		},
	}
	if err := sp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}

	lp := func(v uint32) *uint32 { return &v }
	e, i := ebgp.addr.String(), ibgp.addr.String()
	route := func(peer, prefix, nextHop string, asPath []uint32, localPref *uint32, communities ...string) RouteStatus {
		return RouteStatus{PeerAddress: peer, Family: "ipv4/unicast", Prefix: netip.MustParsePrefix(prefix), NextHop: nextHop,
			ASPath: asPath, LocalPref: localPref, Communities: communities}
	}
	large := []string{"4200000000:1:9", "4200000000:2:1"}
	received := func(peer, prefix string, asPath []uint32, localPref *uint32) RouteStatus {
		r := route(peer, prefix, peer, asPath, localPref, "64512:7", "65000:100", "65000:200")
		r.LargeCommunities = large
		return r
	}
	// eBGP drops LOCAL_PREF; iBGP carries the planned one, or GoBGP's
	// default of 100, and no AS of the speaker's own.
	wantAdv := []RouteStatus{
		route(e, "10.244.1.0/24", "10.0.0.1", []uint32{speakerASN}, nil, "64513:100", "64513:200"),
		route(e, "10.244.2.0/24", "10.0.0.1", []uint32{speakerASN}, nil),
		route(i, "10.244.1.0/24", "10.0.0.1", nil, lp(200), "64513:100", "64513:200"),
		route(i, "10.244.2.0/24", "10.0.0.1", nil, lp(100)),
	}
	wantRecv := []RouteStatus{
		received(e, "10.9.0.0/24", []uint32{routerASN}, nil),
		received(i, "10.8.0.0/24", nil, lp(100)),
	}
	eventually(t, "paths with their attributes", all(
		routesAre(ctx, sp, true, netip.Addr{}, start, wantAdv),
		routesAre(ctx, sp, false, netip.Addr{}, start, wantRecv),
	))
}

func TestLargeCommunitiesCanonical(t *testing.T) {
	got := largeCommunities([]*api.LargeCommunity{
		{GlobalAdmin: 2, LocalData1: 0, LocalData2: 0},
		{GlobalAdmin: 1, LocalData1: 4294967295, LocalData2: 3},
		{GlobalAdmin: 1, LocalData1: 4294967295, LocalData2: 1},
		{GlobalAdmin: 2, LocalData1: 0, LocalData2: 0},
	})
	want := []string{"1:4294967295:1", "1:4294967295:3", "2:0:0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("largeCommunities (-want +got):\n%s", diff)
	}
	if got := canonicalCommunities([]string{"65000:200", "1:2", "65000:200", "65000:100"}); !cmp.Equal(got, []string{"1:2", "65000:100", "65000:200"}) {
		t.Errorf("canonicalCommunities = %q", got)
	}
	if got := canonicalCommunities(nil); got != nil {
		t.Errorf("canonicalCommunities(nil) = %q, want nil", got)
	}
}
