// The stand-in routers listen with TCP MD5 keys, which Linux does not
// support on the MPTCP sockets Go's listeners use by default.

//go:debug multipathtcp=0
package bgp

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/secret"
)

// The speaker tests run the Speaker against real GoBGP "routers" in the same
// process, over loopback. Nothing needs root: the speaker dials (it never
// listens) and the routers listen on unprivileged ports.

const (
	routerASN     = 64524
	router2ASN    = 64600
	speakerASN    = 64513
	speakerNewASN = 64514

	// pollTimeout is generous: the first connection attempt of a GoBGP peer
	// waits 1-2 s, and the machine may be busy.
	pollTimeout  = 30 * time.Second
	pollInterval = 100 * time.Millisecond
)

// testLogger returns a logger that writes to the test output in verbose
// mode and stops writing when the test ends: GoBGP goroutines outlive
// Stop and may still log.
func testLogger(t testing.TB, component string) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w := &closingWriter{w: t.Output()}
	t.Cleanup(w.close) // registered first, so it runs after the Stops
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", component)
}

type closingWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (c *closingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return len(p), nil
	}
	return c.w.Write(p)
}

func (c *closingWriter) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
}

// freePort returns a TCP port that was free on addr a moment ago.
func freePort(t testing.TB, addr string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatalf("finding a free port on %s: %v", addr, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("closing probe listener: %v", err)
	}
	return uint16(port)
}

// router is a GoBGP server standing in for a ToR. It accepts a session from
// the speaker, at 127.0.0.1 or ::1 depending on the router's own address
// family, and never dials. It carries the unicast family of that address.
type router struct {
	name string
	srv  *server.BgpServer
	addr netip.Addr
	port uint16
	asn  uint32
	// speaker is the address the speaker's connections come from.
	speaker string
	family  *api.Family
	// established counts the sessions to the speaker that reached
	// established.
	established atomic.Int32
}

func startRouter(t testing.TB, name, listenAddr, routerID string, asn, speakerASN uint32) *router {
	t.Helper()
	ctx := t.Context()
	r := &router{name: name, addr: netip.MustParseAddr(listenAddr), asn: asn, speaker: "127.0.0.1"}
	r.family = familyOf(r.addr)
	if r.addr.Is6() {
		r.speaker = "::1"
	}
	r.srv = server.NewBgpServer(server.LoggerOption(newTestAdapter(testLogger(t, name))))
	go r.srv.Serve()
	t.Cleanup(func() {
		// Peers first: GoBGP's StopBgp rewrites each neighbour's config
		// while an established session's receive loop may still read it
		// (a data race inside GoBGP, seen under -race).
		ctx := context.Background()
		var peers []string
		_ = r.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			peers = append(peers, p.GetConf().GetNeighborAddress())
		})
		for _, p := range peers {
			_ = r.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p})
		}
		// The receive loop of a deleted session ends with its
		// connection, a moment after DeletePeer returns.
		time.Sleep(300 * time.Millisecond)
		r.srv.Stop()
	})

	r.port = freePort(t, listenAddr)
	err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             asn,
		RouterId:        routerID,
		ListenPort:      int32(r.port),
		ListenAddresses: []string{listenAddr},
	}})
	if err != nil {
		t.Fatalf("%s: StartBgp: %v", name, err)
	}

	watchCtx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err = r.srv.WatchEvent(watchCtx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(ev *api.WatchEventResponse) {
		pe := ev.GetPeer()
		if pe.GetType() != api.WatchEventResponse_PeerEvent_STATE {
			return
		}
		st := pe.GetPeer().GetState()
		if st.GetNeighborAddress() == r.speaker && st.GetSessionState() == api.PeerState_ESTABLISHED {
			r.established.Add(1)
		}
	})
	if err != nil {
		t.Fatalf("%s: WatchEvent: %v", name, err)
	}
	r.addSpeaker(t, speakerASN)
	return r
}

// addSpeaker configures the speaker as a passive neighbor.
func (r *router) addSpeaker(t testing.TB, speakerASN uint32) {
	t.Helper()
	r.addSpeakerWith(t, speakerASN, "", r.family)
}

// addSpeakerWith configures the speaker as a passive neighbor with a TCP
// MD5 password ("" for none) and the families the router offers.
func (r *router) addSpeakerWith(t testing.TB, speakerASN uint32, password string, families ...*api.Family) {
	t.Helper()
	p := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: r.speaker, PeerAsn: speakerASN, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true},
		// A short idle hold keeps the router ready for the speaker's next
		// attempt after a session reset.
		Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: 9, KeepaliveInterval: 3, IdleHoldTimeAfterReset: 1}},
	}
	for _, f := range families {
		p.AfiSafis = append(p.AfiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}})
	}
	if err := r.srv.AddPeer(t.Context(), &api.AddPeerRequest{Peer: p}); err != nil {
		t.Fatalf("%s: AddPeer(%s, AS %d): %v", r.name, r.speaker, speakerASN, err)
	}
}

func (r *router) reconfigureSpeaker(t *testing.T, speakerASN uint32) {
	t.Helper()
	if err := r.srv.DeletePeer(t.Context(), &api.DeletePeerRequest{Address: r.speaker}); err != nil {
		t.Fatalf("%s: DeletePeer(%s): %v", r.name, r.speaker, err)
	}
	r.addSpeaker(t, speakerASN)
}

// originate makes the router advertise prefix itself.
func (r *router) originate(t *testing.T, prefix, nextHop string) {
	t.Helper()
	_, err := r.srv.AddPath(t.Context(), &api.AddPathRequest{Path: apiPath(Path{
		Prefix: netip.MustParsePrefix(prefix), NextHop: netip.MustParseAddr(nextHop),
	})})
	if err != nil {
		t.Fatalf("%s: AddPath(%s): %v", r.name, prefix, err)
	}
}

// peerOfSpeaker is how the speaker reaches this router.
func (r *router) peerOfSpeaker(localASN uint32) Peer {
	return Peer{
		Address:       r.addr,
		Port:          r.port,
		ASN:           r.asn,
		LocalASN:      localASN,
		HoldTime:      9 * time.Second,
		KeepaliveTime: 3 * time.Second,
	}
}

// rib returns the router's global table of its family: prefix -> the next hops of
// every path it holds for it, sorted. A prefix received twice would show
// two next hops.
func (r *router) rib(ctx context.Context) (map[string][]string, error) {
	return r.ribOf(ctx, r.family)
}

// ribOf is rib for the table of family fam.
func (r *router) ribOf(ctx context.Context, fam *api.Family) (map[string][]string, error) {
	out := map[string][]string{}
	var perr error
	err := r.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam}, func(d *api.Destination) {
		for _, p := range d.GetPaths() {
			nh, err := nextHopOf(p)
			if err != nil {
				perr = fmt.Errorf("%s: %w", d.GetPrefix(), err)
			}
			out[d.GetPrefix()] = append(out[d.GetPrefix()], nh)
		}
		slices.Sort(out[d.GetPrefix()])
	})
	if err != nil {
		return nil, fmt.Errorf("%s: ListPath: %w", r.name, err)
	}
	return out, perr
}

func nextHopOf(p *api.Path) (string, error) {
	for _, a := range p.GetPattrs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			return "", err
		}
		switch attr := m.(type) {
		case *api.NextHopAttribute:
			return attr.GetNextHop(), nil
		case *api.MpReachNLRIAttribute:
			return strings.Join(attr.GetNextHops(), ","), nil
		}
	}
	return "", fmt.Errorf("path has no next hop attribute")
}

// speakerSession returns the router's view of its session with the speaker.
func (r *router) speakerSession(ctx context.Context) (*api.Peer, error) {
	var got *api.Peer
	err := r.srv.ListPeer(ctx, &api.ListPeerRequest{Address: r.speaker}, func(p *api.Peer) { got = p })
	if err != nil {
		return nil, fmt.Errorf("%s: ListPeer: %w", r.name, err)
	}
	if got == nil {
		return nil, fmt.Errorf("%s: no neighbor %s", r.name, r.speaker)
	}
	return got, nil
}

// eventually calls check until it returns nil, and fails the test with the
// last error if that does not happen within pollTimeout.
func eventually(t testing.TB, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %v", what, pollTimeout, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: test context done: %v", what, err)
		case <-time.After(pollInterval):
		}
	}
}

// wantRIB builds the rib map a router should hold.
func wantRIB(paths []Path, extra ...string) map[string][]string {
	out := map[string][]string{}
	for _, p := range paths {
		out[p.Prefix.String()] = append(out[p.Prefix.String()], p.NextHop.String())
	}
	for i := 0; i+1 < len(extra); i += 2 {
		out[extra[i]] = append(out[extra[i]], extra[i+1])
	}
	for k := range out {
		slices.Sort(out[k])
	}
	return out
}

func ribIs(ctx context.Context, r *router, want map[string][]string) func() error {
	return ribOfIs(ctx, r, r.family, want)
}

func ribOfIs(ctx context.Context, r *router, fam *api.Family, want map[string][]string) func() error {
	return func() error {
		got, err := r.ribOf(ctx, fam)
		if err != nil {
			return err
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			return fmt.Errorf("%s table (-want +got):\n%s", r.name, diff)
		}
		return nil
	}
}

// sessionEstablished checks the router's side of its session with the
// speaker.
func sessionEstablished(ctx context.Context, r *router, speakerASN uint32, routerID string) func() error {
	return func() error {
		p, err := r.speakerSession(ctx)
		if err != nil {
			return err
		}
		st := p.GetState()
		if st.GetSessionState() != api.PeerState_ESTABLISHED {
			return fmt.Errorf("%s: session with the speaker is %s", r.name, sessionStateName(st.GetSessionState()))
		}
		if st.GetPeerAsn() != speakerASN {
			return fmt.Errorf("%s: speaker's AS is %d, want %d", r.name, st.GetPeerAsn(), speakerASN)
		}
		if st.GetRouterId() != routerID {
			return fmt.Errorf("%s: speaker's router-id is %s, want %s", r.name, st.GetRouterId(), routerID)
		}
		return nil
	}
}

var ignoreUptime = cmpopts.IgnoreFields(PeerStatus{}, "Uptime")

func peersAre(ctx context.Context, s *Speaker, want []PeerStatus) func() error {
	return func() error {
		got, err := s.Peers(ctx)
		if err != nil {
			return err
		}
		if diff := cmp.Diff(want, got, ignoreUptime, cmpopts.EquateEmpty()); diff != "" {
			return fmt.Errorf("speaker Peers() (-want +got):\n%s", diff)
		}
		return nil
	}
}

func status(r *router, localASN uint32, received, advertised uint64) PeerStatus {
	return PeerStatus{
		LocalASN:     localASN,
		PeerASN:      r.asn,
		PeerAddress:  r.addr.String(),
		PeerPort:     uint32(r.port),
		SessionState: "established",
		Family:       map[bool]string{true: "ipv4/unicast", false: "ipv6/unicast"}[r.addr.Is4()],
		Received:     received,
		Advertised:   advertised,
	}
}

// establishedEvents checks how many times the router saw its session with
// the speaker reach established. Events arrive asynchronously, so use it
// inside eventually when waiting for one.
func establishedEvents(r *router, want int32) func() error {
	return func() error {
		if n := r.established.Load(); n != want {
			return fmt.Errorf("%s saw %d established events, want %d", r.name, n, want)
		}
		return nil
	}
}

func all(checks ...func() error) func() error {
	return func() error {
		for _, c := range checks {
			if err := c(); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestSpeaker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real BGP sessions over loopback")
	}
	// 127.0.0.2 is used for the second router: GoBGP keys peers by
	// address, so two routers cannot both be 127.0.0.1.
	needLoopback2(t)

	ctx := t.Context()
	r1 := startRouter(t, "router1", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	// router2 waits, passive, until the speaker is given it as a peer.
	r2 := startRouter(t, "router2", "127.0.0.2", "10.0.0.253", router2ASN, speakerASN)
	routers := []*router{r1, r2}

	logs := &syncBuffer{}
	sp := newTestSpeaker(t, teeLogger(t, "speaker", logs))
	t.Cleanup(func() { sp.Stop(context.Background()) })
	// Session events go to the log: the test reads them back at the end.
	watchCtx, cancelWatch := context.WithCancel(context.Background())
	t.Cleanup(cancelWatch)
	watchErr := make(chan error, 1)
	go func() { watchErr <- sp.WatchSessions(watchCtx) }()

	// Before any Set, the speaker is stopped.
	if got, err := sp.Peers(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Peers() before Set = %v, %v; want nothing", got, err)
	}

	global := Global{ASN: speakerASN, RouterID: netip.MustParseAddr("10.0.0.1")}
	d := Desired{
		Global: global,
		Peers:  []Peer{r1.peerOfSpeaker(speakerASN)},
		Paths: []Path{
			path("10.244.1.0/24", "10.0.0.1"),
			path("10.244.2.0/24", "10.0.0.1"),
		},
	}

	set := func(t *testing.T, d Desired) {
		t.Helper()
		if err := sp.Set(ctx, d); err != nil {
			t.Fatalf("Set(%+v): %v", d, err)
		}
	}

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"establish", func(t *testing.T) {
			set(t, d)
			eventually(t, "session established with the desired paths", all(
				sessionEstablished(ctx, r1, speakerASN, "10.0.0.1"),
				ribIs(ctx, r1, wantRIB(d.Paths)),
				peersAre(ctx, sp, []PeerStatus{status(r1, speakerASN, 0, 2)}),
				establishedEvents(r1, 1),
			))
		}},
		{"same Desired is a no-op", func(t *testing.T) {
			before, err := r1.speakerSession(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var uptime0 time.Duration
			eventually(t, "speaker uptime readable", func() error {
				ps, err := sp.Peers(ctx)
				if err != nil || len(ps) != 1 || ps[0].SessionState != "established" {
					return fmt.Errorf("Peers() = %+v, %v", ps, err)
				}
				uptime0 = ps[0].Uptime
				return nil
			})

			// An equal Desired built from fresh slices.
			again := Desired{Global: global, Peers: slices.Clone(d.Peers), Paths: slices.Clone(d.Paths)}
			set(t, again)
			set(t, again)

			// Wait until the speaker's uptime has grown by more than a
			// second: a reset would have brought it back to zero, and the
			// router has had time to notice one.
			eventually(t, "speaker uptime grows", func() error {
				ps, err := sp.Peers(ctx)
				if err != nil {
					return err
				}
				if len(ps) != 1 || ps[0].SessionState != "established" {
					return fmt.Errorf("Peers() = %+v", ps)
				}
				if ps[0].Uptime < uptime0+2*time.Second {
					return fmt.Errorf("uptime %s, not yet %s", ps[0].Uptime, uptime0+2*time.Second)
				}
				return nil
			})
			after, err := r1.speakerSession(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after.GetState().GetSessionState() != api.PeerState_ESTABLISHED {
				t.Errorf("router1 session is %s after a no-op Set", sessionStateName(after.GetState().GetSessionState()))
			}
			if b, a := before.GetTimers().GetState().GetUptime().AsTime(), after.GetTimers().GetState().GetUptime().AsTime(); !a.Equal(b) {
				t.Errorf("router1 session was re-established by a no-op Set: established at %s, then at %s", b, a)
			}
			if b, a := before.GetState().GetFlops(), after.GetState().GetFlops(); a != b {
				t.Errorf("router1 session flopped: flops %d -> %d", b, a)
			}
			if n := r1.established.Load(); n != 1 {
				t.Errorf("router1 saw %d established events, want 1", n)
			}
			if err := ribIs(ctx, r1, wantRIB(d.Paths))(); err != nil {
				t.Error(err)
			}
		}},
		{"add and withdraw paths", func(t *testing.T) {
			d.Paths = []Path{
				path("10.244.1.0/24", "10.0.0.1"),
				path("10.244.3.0/24", "10.0.0.1"),
				path("10.244.4.0/25", "10.0.0.1"),
			}
			set(t, d)
			eventually(t, "router1 has the new paths", all(
				ribIs(ctx, r1, wantRIB(d.Paths)),
				peersAre(ctx, sp, []PeerStatus{status(r1, speakerASN, 0, 3)}),
			))
			d.Paths = []Path{
				path("10.244.3.0/24", "10.0.0.1"),
				path("10.244.4.0/25", "10.0.0.1"),
			}
			set(t, d)
			eventually(t, "router1 lost the withdrawn path", all(
				ribIs(ctx, r1, wantRIB(d.Paths)),
				peersAre(ctx, sp, []PeerStatus{status(r1, speakerASN, 0, 2)}),
			))
			if n := r1.established.Load(); n != 1 {
				t.Errorf("changing paths reset the session: router1 saw %d established events, want 1", n)
			}
		}},
		{"change next hop", func(t *testing.T) {
			d.Paths = []Path{
				path("10.244.3.0/24", "10.0.0.2"),
				path("10.244.4.0/25", "10.0.0.1"),
			}
			set(t, d)
			eventually(t, "router1 sees the new next hop", all(
				ribIs(ctx, r1, wantRIB(d.Paths)),
				peersAre(ctx, sp, []PeerStatus{status(r1, speakerASN, 0, 2)}),
			))
			// The withdraw of the old path must not take the new one
			// with it: the prefix is still there a moment later.
			time.Sleep(500 * time.Millisecond)
			if err := ribIs(ctx, r1, wantRIB(d.Paths))(); err != nil {
				t.Error(err)
			}
			// And back, through a path whose prefix and next hop both
			// change at once.
			d.Paths = []Path{
				path("10.244.3.0/24", "10.0.0.1"),
				path("10.244.5.0/24", "10.0.0.2"),
			}
			set(t, d)
			eventually(t, "router1 sees the next hop changed back", ribIs(ctx, r1, wantRIB(d.Paths)))
		}},
		{"only local paths are exported", func(t *testing.T) {
			// One prefix the speaker learns before the second session
			// exists (initial table dump), one after (incremental update).
			r1.originate(t, "192.0.2.0/24", "10.0.0.254")
			eventually(t, "speaker receives router1's prefix",
				peersAre(ctx, sp, []PeerStatus{status(r1, speakerASN, 1, 2)}))

			d.Peers = []Peer{r1.peerOfSpeaker(speakerASN), r2.peerOfSpeaker(speakerASN)}
			set(t, d)
			eventually(t, "router2 has the speaker's paths", all(
				sessionEstablished(ctx, r2, speakerASN, "10.0.0.1"),
				ribIs(ctx, r2, wantRIB(d.Paths)),
				peersAre(ctx, sp, []PeerStatus{status(r1, speakerASN, 1, 2), status(r2, speakerASN, 0, 2)}),
			))

			r1.originate(t, "198.51.100.0/24", "10.0.0.254")
			eventually(t, "speaker receives router1's second prefix",
				peersAre(ctx, sp, []PeerStatus{status(r1, speakerASN, 2, 2), status(r2, speakerASN, 0, 2)}))
			// The speaker has processed the update; had it exported the
			// prefix, router2 would get it within this grace period.
			time.Sleep(time.Second)
			if err := ribIs(ctx, r2, wantRIB(d.Paths))(); err != nil {
				t.Errorf("router2 got more than the speaker's own paths: %v", err)
			}
			// router1 holds its own prefixes once: the speaker did not
			// send them back.
			if err := ribIs(ctx, r1, wantRIB(d.Paths, "192.0.2.0/24", "10.0.0.254", "198.51.100.0/24", "10.0.0.254"))(); err != nil {
				t.Error(err)
			}
			if err := peersAre(ctx, sp, []PeerStatus{status(r1, speakerASN, 2, 2), status(r2, speakerASN, 0, 2)})(); err != nil {
				t.Error(err)
			}
			if n := r1.established.Load(); n != 1 {
				t.Errorf("adding a second peer reset the first session: router1 saw %d established events, want 1", n)
			}
		}},
		{"changing the ASN restarts the speaker", func(t *testing.T) {
			for _, r := range routers {
				r.reconfigureSpeaker(t, speakerNewASN)
			}
			d.Global.ASN = speakerNewASN
			for i := range d.Peers {
				d.Peers[i].LocalASN = speakerNewASN
			}
			set(t, d)
			var wantPeers []PeerStatus
			checks := []func() error{}
			for _, r := range routers {
				checks = append(checks, sessionEstablished(ctx, r, speakerNewASN, "10.0.0.1"))
				if r == r1 {
					wantPeers = append(wantPeers, status(r, speakerNewASN, 2, 2))
					checks = append(checks, ribIs(ctx, r, wantRIB(d.Paths, "192.0.2.0/24", "10.0.0.254", "198.51.100.0/24", "10.0.0.254")))
				} else {
					wantPeers = append(wantPeers, status(r, speakerNewASN, 0, 2))
					checks = append(checks, ribIs(ctx, r, wantRIB(d.Paths)))
				}
			}
			checks = append(checks, peersAre(ctx, sp, wantPeers))
			eventually(t, "sessions re-established with the new ASN", all(checks...))
			// The export policy survived the restart.
			time.Sleep(time.Second)
			if err := ribIs(ctx, r2, wantRIB(d.Paths))(); err != nil {
				t.Errorf("after the restart: %v", err)
			}
		}},
		{"zero Desired stops BGP", func(t *testing.T) {
			set(t, Desired{})
			if got, err := sp.Peers(ctx); err != nil || len(got) != 0 {
				t.Errorf("Peers() after Set(Desired{}) = %+v, %v; want nothing", got, err)
			}
			for _, r := range routers {
				eventually(t, r.name+" session down", func() error {
					p, err := r.speakerSession(ctx)
					if err != nil {
						return err
					}
					if st := p.GetState().GetSessionState(); st == api.PeerState_ESTABLISHED {
						return fmt.Errorf("%s: session still established", r.name)
					}
					return nil
				})
			}
			eventually(t, "router1 lost the speaker's paths",
				ribIs(ctx, r1, wantRIB(nil, "192.0.2.0/24", "10.0.0.254", "198.51.100.0/24", "10.0.0.254")))
			eventually(t, "router2 lost the speaker's paths", ribIs(ctx, r2, wantRIB(nil)))
			// Not an assertion on the speaker: GoBGP routers hold a
			// neighbor idle for a few seconds after a session drops and
			// refuse connections meanwhile. Waiting here lets the next
			// step connect at the first attempt instead of after the
			// speaker's connect-retry interval.
			for _, r := range routers {
				eventually(t, r.name+" ready to accept the speaker again", func() error {
					p, err := r.speakerSession(ctx)
					if err != nil {
						return err
					}
					if st := p.GetState().GetSessionState(); st != api.PeerState_ACTIVE {
						return fmt.Errorf("%s: neighbor is %s", r.name, sessionStateName(st))
					}
					return nil
				})
			}
			// Stopping twice is fine.
			set(t, Desired{})
		}},
		{"start again after stop", func(t *testing.T) {
			set(t, d)
			var wantPeers []PeerStatus
			checks := []func() error{}
			for _, r := range routers {
				checks = append(checks, sessionEstablished(ctx, r, speakerNewASN, "10.0.0.1"))
				if r == r1 {
					wantPeers = append(wantPeers, status(r, speakerNewASN, 2, 2))
				} else {
					wantPeers = append(wantPeers, status(r, speakerNewASN, 0, 2))
					checks = append(checks, ribIs(ctx, r, wantRIB(d.Paths)))
				}
			}
			checks = append(checks, peersAre(ctx, sp, wantPeers))
			eventually(t, "sessions re-established after a stop", all(checks...))
			time.Sleep(time.Second)
			if err := ribIs(ctx, r2, wantRIB(d.Paths))(); err != nil {
				t.Errorf("after a stop and start: %v", err)
			}
		}},
	}
	for _, st := range steps {
		if !t.Run(st.name, st.run) {
			t.Fatalf("step %q failed; skipping the rest", st.name)
		}
	}

	// WatchSessions runs until its context ends and logs every session
	// that came up.
	select {
	case err := <-watchErr:
		t.Fatalf("WatchSessions returned %v before its context ended", err)
	default:
	}
	for _, r := range routers {
		re := regexp.MustCompile(`msg="bgp session state" (test=speaker )?peer=` + regexp.QuoteMeta(r.addr.String()) + ` peerASN=\d+ state=established`)
		if !re.MatchString(logs.String()) {
			t.Errorf("the session log has no established session with %s:\n%s", r.name, logs.String())
		}
	}
	cancelWatch()
	select {
	case err := <-watchErr:
		if err != nil {
			t.Errorf("WatchSessions: %v", err)
		}
	case <-time.After(pollTimeout):
		t.Errorf("WatchSessions did not return after its context ended")
	}
}

// A path whose next hop or attributes change is replaced in place: the
// router sees the new path and never a withdrawal.
func TestSpeakerReplacesPathInPlace(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real BGP session over loopback")
	}
	ctx := t.Context()
	r := startRouter(t, "router1", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	var withdrawals atomic.Int32
	var mu sync.Mutex
	var seen []string
	err := r.srv.WatchEvent(ctx, &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
		Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_ADJIN}},
	}}, func(resp *api.WatchEventResponse) {
		for _, p := range resp.GetTable().GetPaths() {
			if p.GetIsWithdraw() {
				withdrawals.Add(1)
			}
			nh, _ := nextHopOf(p)
			mu.Lock()
			seen = append(seen, fmt.Sprintf("withdraw=%v nexthop=%s communities=%v", p.GetIsWithdraw(), nh, communitiesOf(p)))
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	sp := newTestSpeaker(t, testLogger(t, "speaker"))
	t.Cleanup(func() { sp.Stop(context.Background()) })
	prefix := netip.MustParsePrefix("10.5.112.0/24")
	d := Desired{
		Global: Global{ASN: speakerASN, RouterID: netip.MustParseAddr("10.0.0.1")},
		Peers:  []Peer{r.peerOfSpeaker(speakerASN)},
		Paths:  []Path{{Prefix: prefix, NextHop: netip.MustParseAddr("10.4.94.11")}},
	}
	if err := sp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "first path", ribIs(ctx, r, wantRIB(d.Paths)))

	comms := NewCommunities(bgpconfig.Community{ASN: 64513, Value: 200}, bgpconfig.Community{ASN: 64513, Value: 100})
	d.Paths = []Path{{Prefix: prefix, NextHop: netip.MustParseAddr("10.4.94.12"), Attrs: Attrs{LocalPref: 200, Communities: comms}}}
	if err := sp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new next hop", ribIs(ctx, r, wantRIB(d.Paths)))
	eventually(t, "communities", func() error {
		var got []uint32
		err := r.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: r.family}, func(d *api.Destination) {
			for _, p := range d.GetPaths() {
				got = communitiesOf(p)
			}
		})
		if err != nil {
			return err
		}
		if want := []uint32{64513<<16 | 100, 64513<<16 | 200}; !slices.Equal(got, want) {
			return fmt.Errorf("communities %v, want %v", got, want)
		}
		return nil
	})
	// Setting the same again sends nothing.
	if err := sp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if n := withdrawals.Load(); n != 0 {
		t.Errorf("router saw %d withdrawals, want 0; updates:\n%s", n, strings.Join(seen, "\n"))
	}
	if len(seen) != 2 {
		t.Errorf("router saw %d updates, want 2 (announce, replace):\n%s", len(seen), strings.Join(seen, "\n"))
	}
}

func communitiesOf(p *api.Path) []uint32 {
	for _, a := range p.GetPattrs() {
		if m, err := a.UnmarshalNew(); err == nil {
			if c, ok := m.(*api.CommunitiesAttribute); ok {
				return c.GetCommunities()
			}
		}
	}
	return nil
}

func TestCommunitiesCanonical(t *testing.T) {
	a := NewCommunities(bgpconfig.Community{ASN: 2, Value: 1}, bgpconfig.Community{ASN: 1, Value: 65535}, bgpconfig.Community{ASN: 2, Value: 1})
	b := NewCommunities(bgpconfig.Community{ASN: 1, Value: 65535}, bgpconfig.Community{ASN: 2, Value: 1})
	if a != b || a != "1:65535 2:1" {
		t.Errorf("NewCommunities = %q and %q, want both \"1:65535 2:1\"", a, b)
	}
	if got := a.Values(); !slices.Equal(got, []uint32{1<<16 | 65535, 2<<16 | 1}) {
		t.Errorf("Values() = %v", got)
	}
	if NewCommunities() != "" || Communities("").Values() != nil {
		t.Error("empty communities are not empty")
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// teeLogger is testLogger that also writes into buf.
func teeLogger(t *testing.T, component string, buf *syncBuffer) *slog.Logger {
	var w io.Writer = buf
	if testing.Verbose() {
		cw := &closingWriter{w: t.Output()}
		t.Cleanup(cw.close)
		w = io.MultiWriter(buf, cw)
	}
	return slog.New(slog.NewTextHandler(w, nil)).With("test", component)
}

func newTestAdapter(l *slog.Logger) slogAdapter {
	return slogAdapter{l: l, secrets: func() []string { return nil }, fatal: func(error) {}}
}

func failOnFatal(t testing.TB) func(error) {
	return func(err error) { t.Errorf("speaker reported fatal: %v", err) }
}

// TestSpeakerIPv6 runs one IPv6 session over ::1: IPv6 paths are advertised
// with their IPv6 next hop (through MP_REACH_NLRI), and a session carries
// only the family of its peer address.
func TestSpeakerIPv6(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real BGP session over loopback")
	}
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("::1 is not usable on this host: %v", err)
	} else {
		l.Close()
	}
	ctx := t.Context()
	r := startRouter(t, "router6", "::1", "10.0.0.254", routerASN, speakerASN)
	sp := newTestSpeaker(t, testLogger(t, "speaker"))
	t.Cleanup(func() { sp.Stop(context.Background()) })

	v6Paths := []Path{path("fd00:244:1::/64", "fd00::10"), path("fd00:244:2::/64", "fd00::10")}
	d := Desired{
		Global: Global{ASN: speakerASN, RouterID: netip.MustParseAddr("10.0.0.1")},
		Peers:  []Peer{r.peerOfSpeaker(speakerASN)},
		Paths:  append([]Path{path("10.244.1.0/24", "10.0.0.1")}, v6Paths...),
	}
	if err := sp.Set(ctx, d); err != nil {
		t.Fatalf("Set: %v", err)
	}
	eventually(t, "IPv6 session with the IPv6 paths", all(
		sessionEstablished(ctx, r, speakerASN, "10.0.0.1"),
		ribIs(ctx, r, wantRIB(v6Paths)),
		// The IPv4 path stays off the IPv6 session.
		peersAre(ctx, sp, []PeerStatus{status(r, speakerASN, 0, 2)}),
		establishedEvents(r, 1),
	))

	v6Paths = []Path{path("fd00:244:1::/64", "fd00::11"), path("fd00:244:3::/64", "fd00::10")}
	d.Paths = append([]Path{path("10.244.1.0/24", "10.0.0.1")}, v6Paths...)
	if err := sp.Set(ctx, d); err != nil {
		t.Fatalf("Set: %v", err)
	}
	eventually(t, "IPv6 next hop change, add and withdraw", all(
		ribIs(ctx, r, wantRIB(v6Paths)),
		peersAre(ctx, sp, []PeerStatus{status(r, speakerASN, 0, 2)}),
	))
	if n := r.established.Load(); n != 1 {
		t.Errorf("router saw %d established events, want 1", n)
	}
}

// replaceSpeaker reconfigures the router's neighbor for the speaker, as an
// operator changing the router's side would; the session drops.
func (r *router) replaceSpeaker(t *testing.T, speakerASN uint32, password string, families ...*api.Family) {
	t.Helper()
	if err := r.srv.DeletePeer(t.Context(), &api.DeletePeerRequest{Address: r.speaker}); err != nil {
		t.Fatalf("%s: DeletePeer(%s): %v", r.name, r.speaker, err)
	}
	r.addSpeakerWith(t, speakerASN, password, families...)
}

// sessionState returns the speaker's state of its session with r.
func sessionState(ctx context.Context, s *Speaker, r *router) (string, error) {
	ps, err := s.Peers(ctx)
	if err != nil {
		return "", err
	}
	for _, p := range ps {
		if p.PeerAddress == r.addr.String() {
			return p.SessionState, nil
		}
	}
	return "", fmt.Errorf("no session with %s", r.name)
}

// The password of a peer's password-secret reaches the session: with the
// router's key the session comes up under TCP MD5, with another it does
// not; a new key in the Secret re-creates that session alone; a Secret
// that goes away takes its session with it. No key is ever logged.
func TestSpeakerPasswordFromSecret(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real BGP sessions over loopback")
	}
	needLoopback2(t)
	ctx := t.Context()
	const wrongKey, firstKey, secondKey = "not-the-key-7d1", "first-key-93a", "second-key-5c2"
	r1 := startRouter(t, "router1", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	r1.replaceSpeaker(t, speakerASN, firstKey, r1.family)
	r2 := startRouter(t, "router2", "127.0.0.2", "10.0.0.253", routerASN, speakerASN)

	logs := &syncBuffer{}
	sp := newTestSpeaker(t, teeLogger(t, "speaker", logs))
	t.Cleanup(func() { sp.Stop(context.Background()) })

	cfg := parseConfig(t, fmt.Sprintf(`
peers:
- {peer-address: 127.0.0.1, peer-port: %d, peer-asn: %d, my-asn: %d, hold-time: 9s, password-secret: bgp-router1}
- {peer-address: 127.0.0.2, peer-port: %d, peer-asn: %d, my-asn: %d, hold-time: 9s}
`, r1.port, routerASN, speakerASN, r2.port, routerASN, speakerASN))
	node := &snapshot.Node{Name: "worker-1", InternalIPs: addrs("10.0.0.1"), PodCIDRs: prefixes("10.244.1.0/24")}
	podPath := []Path{path("10.244.1.0/24", "10.0.0.1")}
	// apply plans from the snapshot with the Secret holding key, or no
	// Secret when key is empty, and applies the plan.
	apply := func(t *testing.T, key string) Desired {
		t.Helper()
		sec := snapshot.Secrets{Synced: true, Namespace: "kube-system", ByName: map[string]snapshot.SecretEntry{}}
		if key != "" {
			sec.ByName["bgp-router1"] = snapshot.SecretEntry{HasPassword: true, Password: secret.New(key)}
		}
		d, warnings := Plan(withSecrets(snap(node, cfg), sec), sp.Global())
		for _, w := range warnings {
			t.Logf("plan warning: %s", w)
		}
		if err := sp.Set(ctx, d); err != nil {
			t.Fatalf("Set: %v", err)
		}
		return d
	}

	t.Run("wrong key: no session", func(t *testing.T) {
		d := apply(t, wrongKey)
		if len(d.Peers) != 2 || d.Peers[0].Password.Reveal() != wrongKey {
			t.Fatalf("planned peers %+v, want router1's with the Secret's key", d.Peers)
		}
		eventually(t, "router2 up", all(sessionEstablished(ctx, r2, speakerASN, "10.0.0.1"), ribIs(ctx, r2, wantRIB(podPath))))
		// Two connect attempts (5 s apart) with the wrong key fail.
		for deadline := time.Now().Add(2*connectRetry + time.Second); time.Now().Before(deadline); time.Sleep(pollInterval) {
			if n := r1.established.Load(); n != 0 {
				t.Fatalf("router1 established a session with the wrong key")
			}
		}
		if st, err := sessionState(ctx, sp, r1); err != nil || st == "established" {
			t.Fatalf("speaker's session with router1 is %q (err %v), want it down", st, err)
		}
	})
	t.Run("the Secret gets the right key", func(t *testing.T) {
		apply(t, firstKey)
		eventually(t, "router1 up under TCP MD5", all(
			sessionEstablished(ctx, r1, speakerASN, "10.0.0.1"),
			ribIs(ctx, r1, wantRIB(podPath)),
			establishedEvents(r1, 1),
		))
	})
	t.Run("key rotated on both ends: that session alone is re-created", func(t *testing.T) {
		r1.replaceSpeaker(t, speakerASN, secondKey, r1.family)
		apply(t, secondKey)
		eventually(t, "router1 up with the new key", all(
			sessionEstablished(ctx, r1, speakerASN, "10.0.0.1"),
			ribIs(ctx, r1, wantRIB(podPath)),
			establishedEvents(r1, 2),
		))
		if err := establishedEvents(r2, 1)(); err != nil {
			t.Errorf("router2's session was reset: %v", err)
		}
	})
	t.Run("Secret deleted: that session goes, the other stays", func(t *testing.T) {
		d := apply(t, "")
		if len(d.Peers) != 1 || d.Peers[0].Address != r2.addr {
			t.Fatalf("planned peers %+v, want router2's only", d.Peers)
		}
		eventually(t, "router1 lost the speaker's paths", ribIs(ctx, r1, wantRIB(nil)))
		if err := all(establishedEvents(r2, 1), ribIs(ctx, r2, wantRIB(podPath)))(); err != nil {
			t.Errorf("router2: %v", err)
		}
	})

	for _, key := range []string{wrongKey, firstKey, secondKey} {
		if strings.Contains(logs.String(), key) {
			t.Errorf("the speaker's log shows a password:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), "changed=password") {
		t.Errorf("the speaker's log does not say the password changed:\n%s", logs.String())
	}
}

var (
	ipv4Unicast = familyOf(netip.IPv4Unspecified())
	ipv6Unicast = familyOf(netip.IPv6Unspecified())
)

// MP-BGP: a session with DualStack carries IPv6 paths over IPv4 to a
// router that takes both families, with the node's IPv6 address as next
// hop, or the peer's ipv6-next-hop; a router that takes IPv4 only gets
// IPv4 only, and a session without DualStack carries its own family.
func TestSpeakerDualStackSession(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real BGP sessions over loopback")
	}
	needLoopback2(t)
	ctx := t.Context()
	// router1 takes both families, router2 IPv4 only.
	r1 := startRouter(t, "router1", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	r1.replaceSpeaker(t, speakerASN, "", ipv4Unicast, ipv6Unicast)
	r2 := startRouter(t, "router2", "127.0.0.2", "10.0.0.253", router2ASN, speakerASN)
	sp := newTestSpeaker(t, testLogger(t, "speaker"))
	t.Cleanup(func() { sp.Stop(context.Background()) })

	v4 := []Path{path("10.244.1.0/24", "10.0.0.1")}
	v6 := []Path{path("fd00:244:1::/64", "fd00::10"), path("2001:db8:1::10/128", "fd00::10")}
	p1, p2 := r1.peerOfSpeaker(speakerASN), r2.peerOfSpeaker(speakerASN)
	d := Desired{
		Global: Global{ASN: speakerASN, RouterID: netip.MustParseAddr("10.0.0.1")},
		Peers:  []Peer{p1, p2},
		Paths:  append(slices.Clone(v4), v6...),
	}
	set := func(t *testing.T) {
		t.Helper()
		if err := sp.Set(ctx, d); err != nil {
			t.Fatalf("Set: %v", err)
		}
	}
	v4Row := func(r *router, advertised uint64) PeerStatus { return status(r, speakerASN, 0, advertised) }
	v6Row := func(r *router, advertised uint64) PeerStatus {
		st := status(r, speakerASN, 0, advertised)
		st.Family = "ipv6/unicast"
		return st
	}

	t.Run("one family per session", func(t *testing.T) {
		set(t)
		eventually(t, "IPv4 paths only, on both sessions", all(
			ribOfIs(ctx, r1, ipv4Unicast, wantRIB(v4)),
			ribOfIs(ctx, r2, ipv4Unicast, wantRIB(v4)),
			peersAre(ctx, sp, []PeerStatus{v4Row(r1, 1), v4Row(r2, 1)}),
		))
		if err := ribOfIs(ctx, r1, ipv6Unicast, wantRIB(nil))(); err != nil {
			t.Errorf("router1 got IPv6 over a session without dual-stack-address-family: %v", err)
		}
	})
	t.Run("both families where the router takes them", func(t *testing.T) {
		d.Peers[0].DualStack, d.Peers[1].DualStack = true, true
		set(t)
		eventually(t, "router1 gets IPv6 over IPv4 with the node's IPv6 next hop", all(
			sessionEstablished(ctx, r1, speakerASN, "10.0.0.1"),
			ribOfIs(ctx, r1, ipv6Unicast, wantRIB(v6)),
			ribOfIs(ctx, r1, ipv4Unicast, wantRIB(v4)),
			sessionEstablished(ctx, r2, speakerASN, "10.0.0.1"),
			ribOfIs(ctx, r2, ipv4Unicast, wantRIB(v4)),
			// router2 offered IPv4 only: no IPv6 row for it.
			peersAre(ctx, sp, []PeerStatus{v4Row(r1, 1), v6Row(r1, 2), v4Row(r2, 1)}),
		))
		if err := ribOfIs(ctx, r2, ipv6Unicast, wantRIB(nil))(); err != nil {
			t.Errorf("router2, IPv4 only: %v", err)
		}
	})
	t.Run("configured IPv6 next hop, session kept", func(t *testing.T) {
		before := r1.established.Load()
		d.Peers[0].IPv6NextHop = netip.MustParseAddr("fd00::99")
		set(t)
		eventually(t, "router1 sees the configured next hop", all(
			ribOfIs(ctx, r1, ipv6Unicast, wantRIB(nil, "fd00:244:1::/64", "fd00::99", "2001:db8:1::10/128", "fd00::99")),
			ribOfIs(ctx, r1, ipv4Unicast, wantRIB(v4)),
		))
		// Another peer's paths keep the node's next hop.
		r2.replaceSpeaker(t, speakerASN, "", ipv4Unicast, ipv6Unicast)
		eventually(t, "router2, now taking IPv6 too, gets the node's next hop", all(
			ribOfIs(ctx, r2, ipv6Unicast, wantRIB(v6)),
			peersAre(ctx, sp, []PeerStatus{v4Row(r1, 1), v6Row(r1, 2), v4Row(r2, 1), v6Row(r2, 2)}),
		))
		if n := r1.established.Load(); n != before {
			t.Errorf("a next-hop change reset router1's session: %d established events, want %d", n, before)
		}
		// And back to the node's own.
		d.Peers[0].IPv6NextHop = netip.Addr{}
		set(t)
		eventually(t, "router1 back to the node's next hop", ribOfIs(ctx, r1, ipv6Unicast, wantRIB(v6)))
	})
}

// newTestSpeaker is NewSpeaker with its socket in a directory of the test's.
func newTestSpeaker(t testing.TB, log *slog.Logger) *Speaker {
	t.Helper()
	sp, err := NewSpeaker(log, t.TempDir(), failOnFatal(t))
	if err != nil {
		t.Fatalf("NewSpeaker: %v", err)
	}
	return sp
}

// needLoopback2 skips the test where 127.0.0.2 cannot be bound: a second
// router needs it, GoBGP keying peers by address.
func needLoopback2(t testing.TB) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 is not usable on this host: %v", err)
	}
	l.Close()
}
