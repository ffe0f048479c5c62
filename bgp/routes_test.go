package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Routes shows what the router receives (advertised: the speaker's own
// paths with the next hop and AS path on the wire) and what it sends.
func TestSpeakerRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real BGP session over loopback")
	}
	ctx := t.Context()
	r := startRouter(t, "router", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	r.originate(t, "10.9.0.0/24", "127.0.0.1")
	sp := NewSpeaker(testLogger(t, "speaker"), failOnFatal(t))
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
	routesAre := func(advertised bool, only netip.Addr, want []RouteStatus) func() error {
		return func() error {
			got, err := sp.Routes(ctx, advertised, only)
			if err != nil {
				return err
			}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				return fmt.Errorf("Routes(advertised=%v) (-want +got):\n%s", advertised, diff)
			}
			return nil
		}
	}
	eventually(t, "advertised and received paths", all(
		routesAre(true, netip.Addr{}, wantAdv),
		routesAre(false, netip.Addr{}, wantRecv),
		routesAre(false, r.addr, wantRecv),
		routesAre(false, netip.MustParseAddr("192.0.2.1"), nil),
	))
}
