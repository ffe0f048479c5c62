package bgp

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/engine"
)

// When the learned table counts as settled: every peer established for
// settleUp with no change for settleQuiet, or settleMax after start,
// whichever comes first.
const (
	settleUp    = 3 * time.Second
	settleQuiet = time.Second
	settleMax   = 90 * time.Second
)

// learned holds the best paths received from peers, as GoBGP's best-path
// events report them, and whether the table has settled.
type learned struct {
	mu     sync.Mutex
	routes map[netip.Prefix]snapshot.LearnedRoute
	dirty  engine.Trigger

	start      time.Time
	configured bool                     // the speaker's first Set has run
	peers      []netip.Addr             // the peers it holds
	up         map[netip.Addr]time.Time // when each reached established
	lastChange time.Time
	settled    bool // once settled, for good
}

func newLearned() *learned {
	return &learned{routes: map[netip.Prefix]snapshot.LearnedRoute{}, dirty: engine.NewTrigger(),
		start: time.Now(), up: map[netip.Addr]time.Time{}}
}

// setPeers records the peers after a Set. Only a change wakes the
// publisher: every Set ends here, and a publish leads to the next Set.
func (l *learned) setPeers(peers []netip.Addr) {
	slices.SortFunc(peers, netip.Addr.Compare)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.configured && slices.Equal(l.peers, peers) {
		return
	}
	l.configured, l.peers = true, peers
	l.dirty.Fire()
}

// sessionState records a peer's session state change.
func (l *learned) sessionState(peer netip.Addr, established bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if established {
		l.up[peer] = time.Now()
	} else {
		delete(l.up, peer)
	}
}

// isSettled reports whether the table has settled by now.
func (l *learned) isSettled(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.settled {
		return true
	}
	switch {
	case now.Sub(l.start) >= settleMax:
		l.settled = true
	case !l.configured:
	case now.Sub(l.lastChange) < settleQuiet:
	default:
		all := true
		for _, p := range l.peers {
			up, ok := l.up[p]
			all = all && ok && now.Sub(up) >= settleUp
		}
		l.settled = all
	}
	return l.settled
}

func (l *learned) update(paths []*api.Path) {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := false
	for _, p := range paths {
		r, ok := learnedFrom(p)
		if !ok {
			continue
		}
		cur, had := l.routes[r.Prefix]
		switch {
		case p.GetIsWithdraw() || !r.Peer.IsValid():
			// Withdrawn, or the best path is now our own: nothing learned.
			if had {
				delete(l.routes, r.Prefix)
				changed = true
			}
		case !had || !sameLearned(cur, r):
			l.routes[r.Prefix] = r
			changed = true
		}
	}
	if changed {
		l.lastChange = time.Now()
		l.dirty.Fire()
	}
}

func (l *learned) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.up)
	if len(l.routes) > 0 {
		clear(l.routes)
		l.lastChange = time.Now()
		l.dirty.Fire()
	}
}

func (l *learned) list() []snapshot.LearnedRoute {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Collect(maps.Values(l.routes))
	slices.SortFunc(out, func(a, b snapshot.LearnedRoute) int {
		return cmp.Or(comparePrefixes(a.Prefix, b.Prefix), a.Peer.Compare(b.Peer))
	})
	return out
}

// learnedFrom reads a best-path event's path; Peer is invalid for a path of
// our own.
func learnedFrom(p *api.Path) (snapshot.LearnedRoute, bool) {
	if p.GetNlri() == nil {
		return snapshot.LearnedRoute{}, false // End-of-RIB
	}
	rs, err := routeFrom(p)
	if err != nil {
		return snapshot.LearnedRoute{}, false
	}
	r := snapshot.LearnedRoute{Prefix: rs.Prefix.Masked(), ASPath: rs.ASPath, Communities: rs.Communities}
	r.NextHop, _ = netip.ParseAddr(rs.NextHop)
	if peer, err := netip.ParseAddr(p.GetNeighborIp()); err == nil && !peer.IsUnspecified() {
		r.Peer = peer
	}
	return r, true
}

// WatchLearned follows GoBGP's best paths and calls publish with every path
// learned from a peer, sorted by prefix, whenever that set changes, and
// whether it has settled (see snapshot.Snapshot.LearnedSettled); a burst of
// UPDATEs is published once, not per path. It returns when ctx ends.
func (s *Speaker) WatchLearned(ctx context.Context, publish func(routes []snapshot.LearnedRoute, settled bool)) error {
	err := s.srv.WatchEvent(ctx, &api.WatchEventRequest{
		Peer: &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{
			Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}},
		},
	}, func(r *api.WatchEventResponse) {
		if pe := r.GetPeer(); pe != nil {
			if pe.GetType() == api.WatchEventResponse_PeerEvent_STATE {
				st := pe.GetPeer().GetState()
				if addr, err := netip.ParseAddr(st.GetNeighborAddress()); err == nil {
					s.learned.sessionState(addr, st.GetSessionState() == api.PeerState_ESTABLISHED)
				}
			}
			return
		}
		s.learned.update(r.GetTable().GetPaths())
	})
	if err != nil {
		return fmt.Errorf("watching bgp best paths: %w", err)
	}
	// Until settled, look again now and then: settling is a matter of time.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last []snapshot.LearnedRoute
	settled := false
	publish(nil, false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.learned.dirty.C():
		case <-tick.C:
			if settled {
				continue
			}
		}
		routes, nowSettled := s.learned.list(), s.learned.isSettled(time.Now())
		if nowSettled == settled && slices.EqualFunc(routes, last, sameLearned) {
			continue // a publish wakes every part; only a change is worth one
		}
		if nowSettled && !settled {
			s.log.Info("bgp learned routes settled", "routes", len(routes))
		}
		last, settled = routes, nowSettled
		publish(routes, settled)
	}
}

func sameLearned(a, b snapshot.LearnedRoute) bool {
	return a.Prefix == b.Prefix && a.NextHop == b.NextHop && a.Peer == b.Peer && slices.Equal(a.ASPath, b.ASPath) && slices.Equal(a.Communities, b.Communities)
}
