package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	gobgp "github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"

	apiv1 "routeagent.io/route-agent/api/v1"
	"routeagent.io/route-agent/bgp"
	bgpconfig "routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/cluster/snapshot"
)

const sameASN = 64513 // the router and the agent: an iBGP session, which carries LOCAL_PREF

// startIBGPRouter runs a GoBGP server standing in for a ToR in the agent's
// own AS, listening on 127.0.0.1 and waiting, passive, for the agent. It
// sends 10.9.0.0/24 with communities (out of order, one twice) and a large
// community. It returns the port it listens on.
func startIBGPRouter(t *testing.T) uint16 {
	t.Helper()
	ctx := t.Context()
	quiet := gobgplog.NewDefaultLogger()
	quiet.SetLevel(gobgplog.PanicLevel)
	r := gobgp.NewBgpServer(gobgp.LoggerOption(quiet))
	go r.Serve()
	t.Cleanup(func() {
		// The peer first, and a moment for its receive loop to end: GoBGP's
		// StopBgp otherwise races with it (seen under -race).
		_ = r.DeletePeer(context.Background(), &api.DeletePeerRequest{Address: "127.0.0.1"})
		time.Sleep(300 * time.Millisecond)
		r.Stop()
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if err := r.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: sameASN, RouterId: "10.0.0.254", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatalf("router: StartBgp: %v", err)
	}
	ipv4 := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if err := r.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: sameASN},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3}},
		AfiSafis:  []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: ipv4, Enabled: true}}},
	}}); err != nil {
		t.Fatalf("router: AddPeer: %v", err)
	}
	nlri := anyOf(t, &api.IPAddressPrefix{Prefix: "10.9.0.0", PrefixLen: 24})
	attrs := []*anypb.Any{
		anyOf(t, &api.OriginAttribute{Origin: 0}),
		anyOf(t, &api.NextHopAttribute{NextHop: "127.0.0.1"}),
		anyOf(t, &api.CommunitiesAttribute{Communities: []uint32{65000<<16 | 200, 65000<<16 | 100, 65000<<16 | 200}}),
		anyOf(t, &api.LargeCommunitiesAttribute{Communities: []*api.LargeCommunity{{GlobalAdmin: 4200000000, LocalData1: 1, LocalData2: 2}}}),
	}
	if _, err := r.AddPath(ctx, &api.AddPathRequest{Path: &api.Path{Family: ipv4, Nlri: nlri, Pattrs: attrs}}); err != nil {
		t.Fatalf("router: AddPath: %v", err)
	}
	return uint16(port)
}

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// routectl's view of the paths of a real speaker: communities in canonical
// order, the large community, LOCAL_PREF where iBGP carries it, and when
// each path came, across the gRPC API.
func TestListBGPRoutesFromSpeaker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real BGP session over loopback")
	}
	ctx := t.Context()
	start := time.Now()
	port := startIBGPRouter(t)

	sp, err := bgp.NewSpeaker(slog.New(slog.NewTextHandler(io.Discard, nil)), t.TempDir(), func(err error) { t.Errorf("speaker: fatal: %v", err) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Stop(context.Background()) })
	err = sp.Set(ctx, bgp.Desired{
		Global: bgp.Global{ASN: sameASN, RouterID: netip.MustParseAddr("10.0.0.1")},
		Peers: []bgp.Peer{{Address: netip.MustParseAddr("127.0.0.1"), Port: port, ASN: sameASN, LocalASN: sameASN,
			HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second}},
		Paths: []bgp.Path{
			{Prefix: netip.MustParsePrefix("10.5.112.0/24"), NextHop: netip.MustParseAddr("10.4.94.11"),
				Attrs: bgp.Attrs{LocalPref: 200, Communities: bgp.NewCommunities(bgpconfig.Community{ASN: 64513, Value: 100})}},
			{Prefix: netip.MustParsePrefix("10.5.113.0/24"), NextHop: netip.MustParseAddr("10.4.94.11")},
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	socket := filepath.Join(t.TempDir(), "agent.sock")
	l, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handlers{Engine: fakeEngine{snap: &snapshot.Snapshot{}}, Speaker: sp, Routing: fakeRouting{}}
	serveCtx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(serveCtx, l, h, time.Second) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := apiv1.NewAgentClient(conn)

	lp := func(v uint32) *uint32 { return &v }
	want := map[apiv1.ListBGPRoutesRequest_Direction][]*apiv1.BGPRoute{
		// iBGP: no AS of the agent's own; LOCAL_PREF as planned, or
		// GoBGP's default of 100 where the plan sets none.
		apiv1.ListBGPRoutesRequest_ADVERTISED: {
			{PeerAddress: "127.0.0.1", Family: "ipv4/unicast", Prefix: "10.5.112.0/24", NextHop: "10.4.94.11",
				Communities: []string{"64513:100"}, LocalPref: lp(200)},
			{PeerAddress: "127.0.0.1", Family: "ipv4/unicast", Prefix: "10.5.113.0/24", NextHop: "10.4.94.11", LocalPref: lp(100)},
		},
		apiv1.ListBGPRoutesRequest_RECEIVED: {
			{PeerAddress: "127.0.0.1", Family: "ipv4/unicast", Prefix: "10.9.0.0/24", NextHop: "127.0.0.1",
				Communities: []string{"65000:100", "65000:200"}, LargeCommunities: []string{"4200000000:1:2"},
				LocalPref: lp(100), Kernel: "not best: another path won"},
		},
	}
	check := func() error {
		for dir, want := range want {
			resp, err := client.ListBGPRoutes(ctx, &apiv1.ListBGPRoutesRequest{Direction: dir})
			if err != nil {
				return err
			}
			got := resp.GetRoutes()
			for _, r := range got {
				since := time.UnixMilli(r.GetSinceUnixMs())
				if since.Before(start.Truncate(time.Second)) || since.After(time.Now()) {
					return fmt.Errorf("%s %s: since %v, want between %v and now", dir, r.GetPrefix(), since, start)
				}
				r.SinceUnixMs = 0
			}
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				return fmt.Errorf("%s (-want +got):\n%s", dir, diff)
			}
		}
		return nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not as expected after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
