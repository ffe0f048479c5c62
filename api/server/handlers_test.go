package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	apiv1 "routeagent.io/route-agent/api/v1"
	"routeagent.io/route-agent/bgp"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/engine"
	"routeagent.io/route-agent/routing"
	"routeagent.io/route-agent/version"
)

type fakeEngine struct {
	snap    *snapshot.Snapshot
	status  []engine.PartStatus
	ready   bool
	reasons []string
}

func (f fakeEngine) Snapshot() *snapshot.Snapshot { return f.snap }
func (f fakeEngine) Status() []engine.PartStatus  { return f.status }
func (f fakeEngine) Ready() (bool, []string)      { return f.ready, f.reasons }

type fakeSpeaker struct {
	global bgp.Global
	peers  []bgp.PeerStatus
	routes []bgp.RouteStatus
	err    error
	// gotPeer and gotAdvertised record the last Routes call.
	gotPeer       netip.Addr
	gotAdvertised bool
}

func (f *fakeSpeaker) Global() bgp.Global { return f.global }
func (f *fakeSpeaker) Peers(context.Context) ([]bgp.PeerStatus, error) {
	return f.peers, f.err
}
func (f *fakeSpeaker) Routes(_ context.Context, advertised bool, peer netip.Addr) ([]bgp.RouteStatus, error) {
	f.gotAdvertised, f.gotPeer = advertised, peer
	return f.routes, f.err
}

type fakeRouting struct {
	routes []routing.RouteView
	opts   routing.PlanOptions
	heals  uint64
}

func (f fakeRouting) Routes() []routing.RouteView  { return f.routes }
func (f fakeRouting) Options() routing.PlanOptions { return f.opts }
func (f fakeRouting) Stats() routing.Stats         { return routing.Stats{Heals: f.heals} }
func (f fakeRouting) MTU() (int, bool)             { return 0, true }

var labRoutes = fakeRouting{
	opts:  routing.PlanOptions{AutoDirectNodeRoutes: true},
	heals: 2,
	routes: []routing.RouteView{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: netip.MustParseAddr("10.4.94.1"), Kind: routing.KindBGP, For: "10.4.94.1",
			State: "refused", Reason: "learned default route (--install-default-route is off)", Since: time.UnixMilli(5000)},
		{Prefix: netip.MustParsePrefix("10.5.114.0/24"), NextHop: netip.MustParseAddr("10.4.94.12"), Device: "eth0", Kind: routing.KindDirect,
			For: "rack94-node2", State: "installed", Since: time.UnixMilli(6000)},
		{Prefix: netip.MustParsePrefix("10.5.119.0/24"), NextHop: netip.MustParseAddr("10.4.94.1"), Device: "eth0", Kind: routing.KindBGP,
			For: "10.4.94.1", State: "installed", Since: time.UnixMilli(7000)},
	},
}

func TestListRoutes(t *testing.T) {
	h := &Handlers{Engine: fakeEngine{snap: &snapshot.Snapshot{}}, Speaker: &fakeSpeaker{}, Routing: labRoutes}
	got, err := h.ListRoutes(context.Background(), &apiv1.ListRoutesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &apiv1.ListRoutesResponse{Routes: []*apiv1.Route{
		{Prefix: "0.0.0.0/0", NextHop: "10.4.94.1", Kind: "bgp", For: "10.4.94.1", State: "refused",
			Reason: "learned default route (--install-default-route is off)", SinceUnixMs: 5000},
		{Prefix: "10.5.114.0/24", NextHop: "10.4.94.12", Device: "eth0", Kind: "direct", For: "rack94-node2", State: "installed", SinceUnixMs: 6000},
		{Prefix: "10.5.119.0/24", NextHop: "10.4.94.1", Device: "eth0", Kind: "bgp", For: "10.4.94.1", State: "installed", SinceUnixMs: 7000},
	}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("ListRoutes (-want +got):\n%s", diff)
	}
}

// Received paths say what became of them in the kernel.
func TestListBGPRoutesReceivedKernelState(t *testing.T) {
	rs := func(prefix, peer string) bgp.RouteStatus {
		return bgp.RouteStatus{PeerAddress: peer, Family: "ipv4/unicast", Prefix: netip.MustParsePrefix(prefix), NextHop: peer}
	}
	sp := &fakeSpeaker{routes: []bgp.RouteStatus{
		rs("0.0.0.0/0", "10.4.94.1"), rs("10.5.114.0/24", "10.4.94.1"), rs("10.5.119.0/24", "10.4.94.1"),
		rs("10.5.119.0/24", "10.4.94.2"), rs("10.9.0.0/16", "10.4.94.1"), rs("10.5.112.0/24", "10.4.94.1"),
	}}
	self := snapshot.Node{Name: "rack94-node1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.5.112.0/24")}}
	h := &Handlers{Engine: fakeEngine{snap: &snapshot.Snapshot{Cluster: snapshot.Cluster{Self: &self}}}, Speaker: sp, Routing: labRoutes}
	got, err := h.ListBGPRoutes(context.Background(), &apiv1.ListBGPRoutesRequest{Direction: apiv1.ListBGPRoutesRequest_RECEIVED})
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, r := range got.GetRoutes() {
		states = append(states, r.GetPrefix()+" from "+r.GetPeerAddress()+": "+r.GetKernel())
	}
	want := []string{
		"0.0.0.0/0 from 10.4.94.1: refused: learned default route (--install-default-route is off)",
		"10.5.114.0/24 from 10.4.94.1: not installed: the direct route to rack94-node2 wins",
		"10.5.119.0/24 from 10.4.94.1: installed",
		"10.5.119.0/24 from 10.4.94.2: not best: 10.4.94.1's path is",
		"10.9.0.0/16 from 10.4.94.1: not best: another path won",
		"10.5.112.0/24 from 10.4.94.1: not installed: this node's own pod CIDR",
	}
	if diff := cmp.Diff(want, states); diff != "" {
		t.Errorf("kernel states (-want +got):\n%s", diff)
	}
	adv, _ := h.ListBGPRoutes(context.Background(), &apiv1.ListBGPRoutesRequest{Direction: apiv1.ListBGPRoutesRequest_ADVERTISED})
	for _, r := range adv.GetRoutes() {
		if r.GetKernel() != "" {
			t.Errorf("advertised %s has kernel state %q", r.GetPrefix(), r.GetKernel())
		}
	}
}

func TestStatus(t *testing.T) {
	oldVersion, oldCommit := version.Version, version.Commit
	version.Version, version.Commit = "v1.2.0", "0356817c1a2b3c4d5e6f708192a3b4c5d6e7f809"
	t.Cleanup(func() { version.Version, version.Commit = oldVersion, oldCommit })
	t0 := time.UnixMilli(1_700_000_000_000)
	self := snapshot.Node{Name: "n1", InternalIPs: []netip.Addr{netip.MustParseAddr("10.4.94.11")},
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.5.112.0/24")}}
	h := &Handlers{
		Engine: fakeEngine{
			snap: &snapshot.Snapshot{Cluster: snapshot.Cluster{Synced: true, NodeName: "n1", Self: &self, Nodes: []snapshot.Node{self},
				BGP: snapshot.BGPConfig{Source: "kube-system/bgp-config", Present: true, AppliedVersion: "5",
					Err: errors.New("peers[0].peer-asn: missing"), ErrVersion: "6"}}},
			status: []engine.PartStatus{
				{Name: "bgp", Runs: 3, LastRun: t0, LastSuccess: t0, LastDuration: 1500 * time.Microsecond, Warnings: []string{"w"}},
				{Name: "routing", Runs: 2, Failures: 2, LastRun: t0, LastError: "EPERM", FailingSince: t0, NextRetry: t0.Add(time.Second)},
			},
			ready: false, reasons: []string{"routing: never applied: EPERM"},
		},
		Speaker: &fakeSpeaker{global: bgp.Global{ASN: 64513, RouterID: netip.MustParseAddr("10.4.94.11")}},
		Routing: labRoutes,
	}
	got, err := h.Status(context.Background(), &apiv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &apiv1.StatusResponse{
		Version: "v1.2.0", Commit: "0356817c1a2b3c4d5e6f708192a3b4c5d6e7f809",
		NodeName: "n1", NodeKnown: true, NodeIps: []string{"10.4.94.11"}, PodCidrs: []string{"10.5.112.0/24"},
		BgpConfig: &apiv1.ConfigStatus{Source: "kube-system/bgp-config", Present: true, AppliedResourceVersion: "5",
			Error: "peers[0].peer-asn: missing", ErrorResourceVersion: "6"},
		BgpAsn: 64513, BgpRouterId: "10.4.94.11",
		Parts: []*apiv1.PartStatus{
			{Name: "bgp", State: "ok", Runs: 3, LastRunUnixMs: t0.UnixMilli(), LastSuccessUnixMs: t0.UnixMilli(), LastDurationMs: 1, Warnings: []string{"w"}},
			{Name: "routing", State: "failing", Runs: 2, Failures: 2, LastRunUnixMs: t0.UnixMilli(), LastError: "EPERM",
				FailingSinceUnixMs: t0.UnixMilli(), NextRetryUnixMs: t0.UnixMilli() + 1000},
		},
		NotReadyReasons: []string{"routing: never applied: EPERM"},
		Routing: &apiv1.RoutingStatus{Mode: "native", AutoDirectNodeRoutes: true, Heals: 2, Counts: []*apiv1.RouteCount{
			{Kind: "bgp", State: "installed", Count: 1}, {Kind: "bgp", State: "refused", Count: 1}, {Kind: "direct", State: "installed", Count: 1},
		}},
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
}

// On a node without BGP (no Speaker) the status leaves the bgp-config out,
// so that routectl says BGP is disabled, while routing is reported as
// ever; the BGP calls fail with a message that says why.
func TestBGPDisabled(t *testing.T) {
	self := snapshot.Node{Name: "n1", InternalIPs: []netip.Addr{netip.MustParseAddr("10.4.94.11")}}
	h := &Handlers{
		Engine:  fakeEngine{snap: &snapshot.Snapshot{Cluster: snapshot.Cluster{Synced: true, NodeName: "n1", Self: &self}}, ready: true},
		Routing: fakeRouting{opts: routing.PlanOptions{AutoDirectNodeRoutes: true}},
	}
	got, err := h.Status(context.Background(), &apiv1.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetBgpConfig() != nil || got.GetBgpAsn() != 0 || got.GetBgpRouterId() != "" {
		t.Errorf("Status with BGP disabled: bgp config %v, AS %d, router-id %q; want none", got.GetBgpConfig(), got.GetBgpAsn(), got.GetBgpRouterId())
	}
	if !got.GetReady() || got.GetRouting().GetMode() != "native" || !got.GetRouting().GetAutoDirectNodeRoutes() {
		t.Errorf("Status with BGP disabled: ready %v, routing %v; want ready, native with direct routes", got.GetReady(), got.GetRouting())
	}
	for name, call := range map[string]func() error{
		"ListBGPPeers": func() error { _, err := h.ListBGPPeers(context.Background(), &apiv1.ListBGPPeersRequest{}); return err },
		"ListBGPRoutes": func() error {
			_, err := h.ListBGPRoutes(context.Background(), &apiv1.ListBGPRoutesRequest{Direction: apiv1.ListBGPRoutesRequest_RECEIVED})
			return err
		},
	} {
		err := call()
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "BGP is disabled on this node") ||
			!strings.Contains(err.Error(), "--bgp-config is empty") {
			t.Errorf("%s with BGP disabled = %v, want FailedPrecondition saying BGP is disabled and why", name, err)
		}
	}
}

func TestListBGPRoutesParsesPeer(t *testing.T) {
	sp := &fakeSpeaker{routes: []bgp.RouteStatus{{PeerAddress: "10.4.94.1", Family: "ipv4/unicast",
		Prefix: netip.MustParsePrefix("10.5.119.0/24"), NextHop: "10.4.94.1", ASPath: []uint32{64524, 64512}}}}
	h := &Handlers{Engine: fakeEngine{snap: &snapshot.Snapshot{}}, Speaker: sp, Routing: fakeRouting{}}
	r, err := h.ListBGPRoutes(context.Background(), &apiv1.ListBGPRoutesRequest{Direction: apiv1.ListBGPRoutesRequest_RECEIVED, PeerAddress: "10.4.94.1"})
	if err != nil || len(r.GetRoutes()) != 1 || r.GetRoutes()[0].GetPrefix() != "10.5.119.0/24" {
		t.Fatalf("ListBGPRoutes = %v, %v", r, err)
	}
	if sp.gotAdvertised || sp.gotPeer != netip.MustParseAddr("10.4.94.1") {
		t.Errorf("Routes called with advertised=%v peer=%v", sp.gotAdvertised, sp.gotPeer)
	}
	if _, err := h.ListBGPRoutes(context.Background(), &apiv1.ListBGPRoutesRequest{PeerAddress: "10.4.94.300"}); err == nil || !strings.Contains(err.Error(), `"10.4.94.300"`) {
		t.Errorf("bad peer address: err = %v, want one naming it", err)
	}
}

func TestHealthEndpoints(t *testing.T) {
	ready, reasons := false, []string{"waiting for the Kubernetes caches to sync", "bgp: not applied yet"}
	srv := httptest.NewServer(HTTPHandler(nil, func() (bool, []string) { return ready, reasons }))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 503 || body != "not ready:\nwaiting for the Kubernetes caches to sync\nbgp: not applied yet\n" {
		t.Errorf("/readyz while not ready = %d %q", code, body)
	}
	ready = true
	if code, body := get("/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz when ready = %d %q", code, body)
	}
	if code, _ := get("/metrics"); code != 404 {
		t.Errorf("/metrics without a registry = %d, want 404", code)
	}
}

// blockingAgent never answers Status until released.
type blockingAgent struct {
	apiv1.UnimplementedAgentServer
	entered chan struct{}
}

func (b blockingAgent) Status(ctx context.Context, _ *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	close(b.entered)
	select {} // a handler that never returns, not even on cancel
}

// A hung call cannot hold up shutdown beyond the grace period.
func TestServeStopsWithinGrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent := blockingAgent{entered: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l, agent, 200*time.Millisecond) }()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go apiv1.NewAgentClient(conn).Status(context.Background(), &apiv1.StatusRequest{})
	<-agent.entered
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Errorf("Serve returned after %v, before the grace period: it did not wait for the call in flight", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return: graceful stop waited for a hung call")
	}
}
