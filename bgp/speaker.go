package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	srv *server.BgpServer
	log *slog.Logger

	mu sync.Mutex
	// cur is what GoBGP holds now, as far as Set got.
	cur     Desired
	uuids   map[Path][]byte
	stopped bool

	// global mirrors cur.Global for readers (status, metrics, the next
	// plan) that must not wait for a Set in progress.
	global atomic.Pointer[Global]
}

// NewSpeaker starts an embedded GoBGP server that holds no sessions and
// listens on no port until Set gives it peers.
func NewSpeaker(log *slog.Logger) *Speaker {
	srv := server.NewBgpServer(server.LoggerOption(slogAdapter{log}))
	go srv.Serve()
	return &Speaker{srv: srv, log: log, uuids: map[Path][]byte{}}
}

// WatchSessions logs every session state change until ctx ends.
func (s *Speaker) WatchSessions(ctx context.Context) error {
	return s.srv.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, func(r *api.WatchEventResponse) {
		pe := r.GetPeer()
		if pe == nil || pe.GetType() != api.WatchEventResponse_PeerEvent_STATE {
			return
		}
		st := pe.GetPeer().GetState()
		s.log.Info("bgp session state", "peer", st.GetNeighborAddress(), "peerASN", st.GetPeerAsn(),
			"state", sessionStateName(st.GetSessionState()))
	})
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
		if s.cur.Global.ASN != 0 {
			if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
				s.log.Error("stopping bgp", "err", err)
			}
		}
		s.srv.Stop()
		s.setGlobal(Global{})
		s.cur = Desired{}
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
	if g := s.global.Load(); g != nil {
		return *g
	}
	return Global{}
}

func (s *Speaker) setGlobal(g Global) {
	s.cur.Global = g
	s.global.Store(&g)
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

	if d.Global != s.cur.Global {
		if err := s.restart(ctx, d.Global); err != nil {
			return err
		}
	}
	if s.cur.Global.ASN == 0 {
		return nil
	}

	var errs []error
	want := map[netip.Addr]Peer{}
	for _, p := range d.Peers {
		want[p.Address] = p
	}
	// Sessions first: removing a peer before withdrawing paths avoids
	// sending it withdrawals it is about to lose anyway.
	var kept []Peer
	for _, p := range s.cur.Peers {
		if w, ok := want[p.Address]; ok && w == p {
			kept = append(kept, p)
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.String()}); err != nil {
			errs = append(errs, fmt.Errorf("removing peer %s: %w", p.Address, err))
			kept = append(kept, p)
			continue
		}
		s.log.Info("bgp peer removed", "peer", p.Address, "peerASN", p.ASN)
	}
	s.cur.Peers = kept
	for _, p := range d.Peers {
		if slices.Contains(s.cur.Peers, p) {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			errs = append(errs, fmt.Errorf("adding peer %s: %w", p.Address, err))
			continue
		}
		s.log.Info("bgp peer added", "peer", p.Address, "peerASN", p.ASN, "localASN", p.LocalASN)
		s.cur.Peers = append(s.cur.Peers, p)
	}

	// Withdraw before announcing: GoBGP keys local paths by prefix, so a
	// path whose next hop changed must go before its replacement comes.
	var paths []Path
	for _, p := range s.cur.Paths {
		if slices.Contains(d.Paths, p) {
			paths = append(paths, p)
			continue
		}
		uuid, ok := s.uuids[p]
		if !ok {
			// An empty DeletePathRequest withdraws every local path.
			errs = append(errs, fmt.Errorf("withdrawing %s: no GoBGP uuid recorded", p.Prefix))
			paths = append(paths, p)
			continue
		}
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{Uuid: uuid}); err != nil {
			errs = append(errs, fmt.Errorf("withdrawing %s: %w", p.Prefix, err))
			paths = append(paths, p)
			continue
		}
		delete(s.uuids, p)
		s.log.Info("bgp path withdrawn", "prefix", p.Prefix, "nexthop", p.NextHop)
	}
	s.cur.Paths = paths
	for _, p := range d.Paths {
		if slices.Contains(s.cur.Paths, p) {
			continue
		}
		resp, err := s.srv.AddPath(ctx, &api.AddPathRequest{Path: apiPath(p)})
		if err != nil {
			errs = append(errs, fmt.Errorf("advertising %s: %w", p.Prefix, err))
			continue
		}
		s.uuids[p] = resp.GetUuid()
		s.log.Info("bgp path advertised", "prefix", p.Prefix, "nexthop", p.NextHop)
		s.cur.Paths = append(s.cur.Paths, p)
	}
	return errors.Join(errs...)
}

// restart stops the speaker and starts it again with g (or leaves it
// stopped when g is zero). GoBGP cannot change its ASN or router-id while
// running.
func (s *Speaker) restart(ctx context.Context, g Global) error {
	if s.cur.Global.ASN != 0 {
		s.log.Info("stopping bgp speaker", "asn", s.cur.Global.ASN, "routerID", s.cur.Global.RouterID)
		if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
			return fmt.Errorf("stopping bgp: %w", err)
		}
		s.cur = Desired{}
		s.setGlobal(Global{})
		clear(s.uuids)
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
	err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_EXPORT,
		Policies:      []*api.Policy{{Name: exportPolicy}},
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
		for _, af := range p.GetAfiSafis() {
			r := row
			r.Family = familyName(af.GetConfig().GetFamily())
			r.Received = af.GetState().GetReceived()
			r.Advertised = af.GetState().GetAdvertised()
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
