package bgp

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	api "github.com/osrg/gobgp/v3/api"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/engine"
)

// learned holds the best paths received from peers, as GoBGP's best-path
// events report them.
type learned struct {
	mu     sync.Mutex
	routes map[netip.Prefix]snapshot.LearnedRoute
	dirty  engine.Trigger
}

func newLearned() *learned {
	return &learned{routes: map[netip.Prefix]snapshot.LearnedRoute{}, dirty: engine.NewTrigger()}
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
		case !had || cur.NextHop != r.NextHop || cur.Peer != r.Peer || !slices.Equal(cur.ASPath, r.ASPath):
			l.routes[r.Prefix] = r
			changed = true
		}
	}
	if changed {
		l.dirty.Fire()
	}
}

func (l *learned) clear() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.routes) > 0 {
		clear(l.routes)
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
	r := snapshot.LearnedRoute{Prefix: rs.Prefix.Masked(), ASPath: rs.ASPath}
	r.NextHop, _ = netip.ParseAddr(rs.NextHop)
	if peer, err := netip.ParseAddr(p.GetNeighborIp()); err == nil && !peer.IsUnspecified() {
		r.Peer = peer
	}
	return r, true
}

// WatchLearned follows GoBGP's best paths and calls publish with every path
// learned from a peer, sorted by prefix, whenever that set changes; a burst
// of UPDATEs is published once, not per path. It returns when ctx ends.
func (s *Speaker) WatchLearned(ctx context.Context, publish func([]snapshot.LearnedRoute)) error {
	err := s.srv.WatchEvent(ctx, &api.WatchEventRequest{Table: &api.WatchEventRequest_Table{
		Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}},
	}}, func(r *api.WatchEventResponse) {
		s.learned.update(r.GetTable().GetPaths())
	})
	if err != nil {
		return fmt.Errorf("watching bgp best paths: %w", err)
	}
	publish(nil)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.learned.dirty.C():
			publish(s.learned.list())
		}
	}
}
