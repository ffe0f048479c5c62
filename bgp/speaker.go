package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// connectRetry is how long GoBGP waits between connection attempts. GoBGP's
// default of 120 s leaves a node without routes for two minutes whenever its
// first attempt races the ToR.
const connectRetry = 5 * time.Second

const exportPolicy = "route-agent-export-local"

// Speaker is the reconciler for the embedded GoBGP server: Set makes GoBGP
// hold exactly the sessions and paths of a Desired. Set may be called again
// with the same Desired; that does nothing.
type Speaker struct {
	srv    *server.BgpServer
	stream *pathStream
	log    *slog.Logger

	mu sync.Mutex
	// What GoBGP holds now, as far as Set got.
	global Global
	peers  map[netip.Addr]Peer
	paths  map[netip.Prefix]Path
	// nextHops are the next-hop export policies GoBGP holds.
	nextHops map[nextHopPolicy]bool
	stopped  bool
	// restarting is true from a restart after a crash until the first
	// sessions are added (see SetRestarting).
	restarting bool

	learned *learned

	// running mirrors global for readers (status, metrics, the next plan)
	// that must not wait for a Set in progress; passwords likewise for the
	// log adapter, which GoBGP calls while Set holds mu.
	running   atomic.Pointer[Global]
	passwords atomic.Pointer[[]string]
}

// NewSpeaker starts an embedded GoBGP server that holds no sessions and
// listens on no BGP port until Set gives it peers. socketDir is a directory
// the speaker makes private to root for its GoBGP's API socket (see
// pathStream). fatal is called if GoBGP reports an error it cannot go on
// from; the agent should then shut down.
func NewSpeaker(log *slog.Logger, socketDir string, fatal func(error)) (*Speaker, error) {
	socket, opts, err := pathStreamServer(socketDir)
	if err != nil {
		return nil, err
	}
	s := &Speaker{log: log, peers: map[netip.Addr]Peer{}, paths: map[netip.Prefix]Path{},
		nextHops: map[nextHopPolicy]bool{}, learned: newLearned()}
	opts = append(opts, server.LoggerOption(slogAdapter{l: log, secrets: s.secrets, fatal: fatal}))
	s.srv = server.NewBgpServer(opts...)
	go s.srv.Serve()
	if s.stream, err = dialPathStream(socket); err != nil {
		s.srv.Stop()
		return nil, err
	}
	return s, nil
}

// SetRestarting tells the speaker, before its first Set, that this node's
// agent crashed and its routes are still in place: the first sessions
// announce a graceful restart, so the peers keep the node's routes until it
// has re-advertised them.
func (s *Speaker) SetRestarting(r bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restarting = r
}

func (s *Speaker) secrets() []string {
	if p := s.passwords.Load(); p != nil {
		return *p
	}
	return nil
}

// WatchSessions logs every session state change until ctx ends. GoBGP's
// WatchEvent only registers the watch, so this waits for ctx itself.
func (s *Speaker) WatchSessions(ctx context.Context) error {
	err := s.srv.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		pe := r.GetPeer()
		if pe == nil || pe.GetType() != api.WatchEventResponse_PeerEvent_STATE {
			return
		}
		st := pe.GetPeer().GetState()
		s.log.Info("bgp session state", "peer", st.GetNeighborAddress(), "peerASN", st.GetPeerAsn(),
			"state", sessionStateName(st.GetSessionState()))
	})
	if err != nil {
		return fmt.Errorf("watching bgp sessions: %w", err)
	}
	<-ctx.Done()
	return nil
}

// Stop closes every session with a Cease notification and stops the
// server; Set does nothing afterwards. GoBGP's shutdown does not heed
// contexts, so Stop gives up waiting when ctx ends.
func (s *Speaker) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopped = true
		if s.global.ASN != 0 {
			if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
				s.log.Error("stopping bgp", "err", err)
			}
		}
		s.srv.Stop()
		s.stream.close()
		s.forget()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bgp speaker did not stop: %w", ctx.Err())
	}
}

// Global returns the speaker-wide configuration in force; zero when BGP is
// stopped. It never waits for a Set in progress.
func (s *Speaker) Global() Global {
	if g := s.running.Load(); g != nil {
		return *g
	}
	return Global{}
}

func (s *Speaker) setGlobal(g Global) {
	s.global = g
	s.running.Store(&g)
}

// forget records that GoBGP holds nothing.
func (s *Speaker) forget() {
	s.setGlobal(Global{})
	clear(s.peers)
	clear(s.paths)
	clear(s.nextHops) // StartBgp starts GoBGP's policies afresh
	s.learned.clear()
}

// Set applies d. It keeps going after a failure and returns all errors
// joined; the speaker is then left in the state it reached, and the next
// Set retries the rest.
func (s *Speaker) Set(ctx context.Context, d Desired) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("bgp speaker is stopped")
	}
	passwords := make([]string, 0, len(d.Peers))
	for _, p := range d.Peers {
		if p.Password.IsSet() {
			passwords = append(passwords, p.Password.Reveal())
		}
	}
	// Old and new: GoBGP may still log about a peer being removed.
	for _, p := range s.peers {
		if p.Password.IsSet() {
			passwords = append(passwords, p.Password.Reveal())
		}
	}
	s.passwords.Store(&passwords)

	defer func() { s.learned.setPeers(slices.Collect(maps.Keys(s.peers))) }()
	if d.Global != s.global {
		if err := s.restart(ctx, d.Global); err != nil {
			return err
		}
	}
	if s.global.ASN == 0 {
		return nil
	}
	// Paths before peers: a session that comes up then finds them all in
	// place and gets them in a few full UPDATEs, and End-of-RIB after
	// them, rather than one UPDATE per path added after it is up.
	return errors.Join(s.setPaths(ctx, d.Paths), s.setPeers(ctx, d.Peers))
}

func (s *Speaker) setPeers(ctx context.Context, peers []Peer) error {
	var errs []error
	want := make(map[netip.Addr]Peer, len(peers))
	for _, p := range peers {
		want[p.Address] = p
	}
	// Policies first, so that a new or changed session sends its first
	// UPDATE with the right next hops.
	if err := s.setNextHopPolicies(ctx, peers); err != nil {
		errs = append(errs, err)
	}
	for addr, p := range s.peers {
		if _, ok := want[addr]; ok {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("removing peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.log.Info("bgp peer removed", "peer", addr, "peerASN", p.ASN)
	}
	for _, p := range peers {
		cur, ok := s.peers[p.Address]
		switch {
		case !ok:
			if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p, s.restarting)}); err != nil {
				errs = append(errs, fmt.Errorf("adding peer %s: %w", p.Address, err))
				continue
			}
			s.log.Info("bgp peer added", "peer", p.Address, "peerASN", p.ASN, "localASN", p.LocalASN,
				"families", familyNames(p), "gracefulRestart", s.restarting)
		case cur != p:
			if err := s.updatePeer(ctx, cur, p); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		s.peers[p.Address] = p
	}
	if len(s.peers) > 0 {
		// Only the sessions of the restart itself are restarting.
		s.restarting = false
	}
	return errors.Join(errs...)
}

// updatePeer changes the session with cur.Address from cur to want, and
// touches no other session. GoBGP's UpdatePeer re-creates the session when
// its OPEN changes (ASNs, port, password, families: TCP MD5 keys are set
// when a connection is made) and changes the rest in place.
func (s *Speaker) updatePeer(ctx context.Context, cur, want Peer) error {
	changed := changedFields(cur, want)
	if _, err := s.srv.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: apiPeer(want, false)}); err != nil {
		return fmt.Errorf("updating peer %s (%s): %w", want.Address, strings.Join(changed, ", "), err)
	}
	// What GoBGP changes in place: timers apply from the next session
	// only, so that one is reset to negotiate them; next hops are export
	// policy, which the peer's paths go through again.
	inPlace := func(p Peer) Peer {
		p.HoldTime, p.KeepaliveTime, p.EBGPMultihop, p.IPv4NextHop, p.IPv6NextHop = 0, 0, false, netip.Addr{}, netip.Addr{}
		return p
	}
	reset := "session re-established"
	switch {
	case inPlace(cur) != inPlace(want):
	case cur.HoldTime != want.HoldTime || cur.KeepaliveTime != want.KeepaliveTime:
		err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: want.Address.String(), Communication: "timers changed"})
		if err != nil {
			return fmt.Errorf("resetting peer %s for its new timers: %w", want.Address, err)
		}
	case cur.IPv4NextHop != want.IPv4NextHop || cur.IPv6NextHop != want.IPv6NextHop:
		err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: want.Address.String(), Soft: true, Direction: api.ResetPeerRequest_OUT})
		if err != nil {
			return fmt.Errorf("re-sending the paths of peer %s with their new next hops: %w", want.Address, err)
		}
		reset = "paths re-sent, session kept"
	default:
		reset = "session kept"
	}
	s.log.Info("bgp peer updated", "peer", want.Address, "changed", strings.Join(changed, ","), "result", reset)
	return nil
}

// changedFields names the fields that differ, for the log: a password
// shows as changed, never as a value.
func changedFields(a, b Peer) []string {
	var out []string
	add := func(name string, differs bool) {
		if differs {
			out = append(out, name)
		}
	}
	add("peer-port", a.Port != b.Port)
	add("peer-asn", a.ASN != b.ASN)
	add("my-asn", a.LocalASN != b.LocalASN)
	add("hold-time", a.HoldTime != b.HoldTime)
	add("keepalive-time", a.KeepaliveTime != b.KeepaliveTime)
	add("source-address", a.SourceAddress != b.SourceAddress)
	add("password", a.Password != b.Password)
	add("ebgp-multihop", a.EBGPMultihop != b.EBGPMultihop)
	add("dual-stack-address-family", a.DualStack != b.DualStack)
	add("ipv4-next-hop", a.IPv4NextHop != b.IPv4NextHop)
	add("ipv6-next-hop", a.IPv6NextHop != b.IPv6NextHop)
	return out
}

func familyNames(p Peer) string {
	var names []string
	for _, f := range p.families() {
		names = append(names, familyName(f))
	}
	return strings.Join(names, ",")
}

// setNextHopPolicies makes GoBGP hold the next-hop export policies the
// peers ask for, ahead of the plain export policy.
func (s *Speaker) setNextHopPolicies(ctx context.Context, peers []Peer) error {
	want := nextHopPolicies(peers)
	if maps.Equal(want, s.nextHops) {
		return nil
	}
	var errs []error
	for n := range want {
		if s.nextHops[n] {
			continue
		}
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: n.apiNeighborSet(), Replace: true}); err != nil {
			errs = append(errs, fmt.Errorf("adding the neighbor set of peer %s: %w", n.peer, err))
			continue
		}
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: n.apiPolicy()}); err != nil {
			errs = append(errs, fmt.Errorf("adding next-hop policy %s: %w", n.name(), err))
			continue
		}
		s.nextHops[n] = true
	}
	// In force: the wanted ones GoBGP holds.
	var names []string
	for n := range s.nextHops {
		if want[n] {
			names = append(names, n.name())
		}
	}
	slices.Sort(names)
	if err := s.assignExport(ctx, names); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for n := range s.nextHops {
		if want[n] {
			continue
		}
		if err := s.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: n.name()}, All: true}); err != nil {
			errs = append(errs, fmt.Errorf("removing next-hop policy %s: %w", n.name(), err))
			continue
		}
		delete(s.nextHops, n)
		if !slices.ContainsFunc(slices.Collect(maps.Keys(s.nextHops)), func(o nextHopPolicy) bool { return o.peer == n.peer }) {
			err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: n.apiNeighborSet(), All: true})
			if err != nil {
				errs = append(errs, fmt.Errorf("removing the neighbor set of peer %s: %w", n.peer, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (s *Speaker) setPaths(ctx context.Context, paths []Path) error {
	var errs []error
	want := make(map[netip.Prefix]Path, len(paths))
	for _, p := range paths {
		if _, dup := want[p.Prefix]; dup {
			errs = append(errs, fmt.Errorf("advertising %s: planned twice", p.Prefix))
		}
		want[p.Prefix] = p
	}
	var adds, dels []Path
	for _, p := range paths {
		if cur, ok := s.paths[p.Prefix]; !ok || cur != p {
			adds = append(adds, p)
		}
	}
	for prefix, p := range s.paths {
		if _, ok := want[prefix]; !ok {
			dels = append(dels, p)
		}
	}
	// A line per path while few change; a burst (thousands of
	// LoadBalancer addresses at once) is summed up instead, as writing a
	// line cost about as much as announcing the path.
	level := slog.LevelInfo
	if len(adds)+len(dels) > pathLogLimit {
		level = slog.LevelDebug
	}
	if len(adds)+len(dels) == 0 {
		return errors.Join(errs...)
	}
	// Announcing a prefix GoBGP already holds replaces its path in place
	// (GoBGP keys local paths by prefix), so a new next hop or new
	// attributes go out as one UPDATE with no withdrawal.
	if err := s.stream.send(ctx, adds, dels); err != nil {
		// GoBGP may hold any part of the change. s.paths is left as it
		// was, so the next Set sends all of it again: announcing or
		// withdrawing a path twice is harmless.
		return errors.Join(append(errs, fmt.Errorf("changing %d bgp paths: %w", len(adds)+len(dels), err))...)
	}
	for _, p := range adds {
		s.paths[p.Prefix] = p
		s.log.Log(ctx, level, "bgp path advertised", "prefix", p.Prefix, "nexthop", p.NextHop,
			"localPref", p.Attrs.LocalPref, "communities", string(p.Attrs.Communities))
	}
	for _, p := range dels {
		delete(s.paths, p.Prefix)
		s.log.Log(ctx, level, "bgp path withdrawn", "prefix", p.Prefix, "nexthop", p.NextHop)
	}
	if level != slog.LevelInfo {
		s.log.Info("bgp paths changed", "advertised", len(adds), "withdrawn", len(dels))
	}
	return errors.Join(errs...)
}

// pathLogLimit is how many path changes one Set logs a line each for.
const pathLogLimit = 20

// restart stops the speaker and starts it again with g (or leaves it
// stopped when g is zero). GoBGP cannot change its ASN or router-id while
// running.
func (s *Speaker) restart(ctx context.Context, g Global) error {
	if s.global.ASN != 0 {
		s.log.Info("stopping bgp speaker", "asn", s.global.ASN, "routerID", s.global.RouterID)
		if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
			return fmt.Errorf("stopping bgp: %w", err)
		}
		s.forget()
	}
	if g.ASN == 0 {
		return nil
	}
	// ListenPort -1: the agent always dials its peers, and a host-network
	// agent must not take port 179 from anything else on the node.
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: g.ASN, RouterId: g.RouterID.String(), ListenPort: -1,
	}})
	if err != nil {
		return fmt.Errorf("starting bgp with asn %d router-id %s: %w", g.ASN, g.RouterID, err)
	}
	if err := s.setExportPolicy(ctx); err != nil {
		_ = s.srv.StopBgp(ctx, &api.StopBgpRequest{})
		return err
	}
	s.log.Info("bgp speaker started", "asn", g.ASN, "routerID", g.RouterID)
	s.setGlobal(g)
	return nil
}

// setExportPolicy lets only the agent's own paths out: without it GoBGP
// would pass routes learned from one ToR to the other and make the node a
// transit router. It matches on route type, not on a prefix set, because an
// empty prefix set would match everything.
func (s *Speaker) setExportPolicy(ctx context.Context) error {
	pol := &api.Policy{Name: exportPolicy, Statements: []*api.Statement{{
		Name:       exportPolicy + "-accept",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ACCEPT},
	}}}
	// StartBgp resets the policies, but check rather than rely on it.
	// ListPolicy reports a missing name as an error, so only the callback
	// tells whether it exists.
	var exists bool
	_ = s.srv.ListPolicy(ctx, &api.ListPolicyRequest{Name: exportPolicy}, func(*api.Policy) { exists = true })
	if !exists {
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol, ReferExistingStatements: false}); err != nil {
			return fmt.Errorf("adding export policy: %w", err)
		}
	}
	return s.assignExport(ctx, nil)
}

// assignExport makes the named next-hop policies, then the plain export
// policy, the export policy of every session; anything they do not accept
// is rejected.
func (s *Speaker) assignExport(ctx context.Context, nextHops []string) error {
	var pols []*api.Policy
	for _, n := range nextHops {
		pols = append(pols, &api.Policy{Name: n})
	}
	err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_EXPORT,
		Policies:      append(pols, &api.Policy{Name: exportPolicy}),
		DefaultAction: api.RouteAction_REJECT,
	}})
	if err != nil {
		return fmt.Errorf("assigning export policy: %w", err)
	}
	return nil
}

// PeerStatus is one row of `routectl bgp peers`: a peer and one family.
type PeerStatus struct {
	LocalASN     uint32
	PeerASN      uint32
	PeerAddress  string
	PeerPort     uint32
	SessionState string
	Uptime       time.Duration
	Family       string
	Received     uint64
	Advertised   uint64
}

// Peers reports every session GoBGP holds, one entry per family, sorted by
// peer address.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	if s.Global().ASN == 0 {
		return nil, nil
	}
	var out []PeerStatus
	now := time.Now()
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := p.GetState()
		row := PeerStatus{
			LocalASN:     p.GetConf().GetLocalAsn(),
			PeerASN:      st.GetPeerAsn(),
			PeerAddress:  p.GetConf().GetNeighborAddress(),
			PeerPort:     p.GetTransport().GetRemotePort(),
			SessionState: sessionStateName(st.GetSessionState()),
		}
		if row.PeerASN == 0 {
			row.PeerASN = p.GetConf().GetPeerAsn()
		}
		if st.GetSessionState() == api.PeerState_ESTABLISHED {
			if up := p.GetTimers().GetState().GetUptime(); up != nil {
				row.Uptime = now.Sub(up.AsTime()).Truncate(time.Second)
			}
		}
		// With graceful restart negotiated, GoBGP counts the End-of-RIB
		// marker it sends per family among the advertised paths.
		gr := p.GetGracefulRestart().GetPeerRestartTime() > 0
		for _, af := range p.GetAfiSafis() {
			gr = gr || af.GetMpGracefulRestart().GetState().GetReceived()
		}
		// A family the peer did not take is no part of the session.
		negotiated := negotiatedFamilies(p)
		for _, af := range p.GetAfiSafis() {
			r := row
			r.Family = familyName(af.GetConfig().GetFamily())
			if negotiated != nil && !negotiated[r.Family] {
				continue
			}
			r.Received = af.GetState().GetReceived()
			r.Advertised = af.GetState().GetAdvertised()
			if gr && r.Advertised > 0 && st.GetSessionState() == api.PeerState_ESTABLISHED {
				r.Advertised--
			}
			out = append(out, r)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("listing bgp peers: %w", err)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int {
		return cmp.Or(compareAddrStrings(a.PeerAddress, b.PeerAddress), strings.Compare(a.Family, b.Family))
	})
	return out, nil
}
