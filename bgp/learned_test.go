package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	"routeagent.io/route-agent/cluster/snapshot"
)

// The speaker publishes what its peers send as best paths, follows
// withdrawals, and forgets everything when it restarts.
func TestSpeakerLearnedRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real BGP session over loopback")
	}
	ctx := t.Context()
	r := startRouter(t, "router1", "127.0.0.1", "10.0.0.254", routerASN, speakerASN)
	sp := newTestSpeaker(t, testLogger(t, "speaker"))
	t.Cleanup(func() { sp.Stop(context.Background()) })

	var mu sync.Mutex
	var last []snapshot.LearnedRoute
	publishes, settled := 0, false
	watchCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- sp.WatchLearned(watchCtx, func(l []snapshot.LearnedRoute, s bool) {
			mu.Lock()
			defer mu.Unlock()
			if settled && !s {
				t.Errorf("learned routes were settled, then not")
			}
			last, publishes, settled = l, publishes+1, s
		})
	}()
	learnedIs := func(want ...string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			var got []string
			for _, l := range last {
				got = append(got, fmt.Sprintf("%s via %s from %s path %v", l.Prefix, l.NextHop, l.Peer, l.ASPath))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("learned %q, want %q", got, want)
			}
			return nil
		}
	}

	d := Desired{
		Global: Global{ASN: speakerASN, RouterID: netip.MustParseAddr("10.0.0.1")},
		Peers:  []Peer{r.peerOfSpeaker(speakerASN)},
		Paths:  []Path{{Prefix: netip.MustParsePrefix("10.5.112.0/24"), NextHop: netip.MustParseAddr("10.0.0.1")}},
	}
	if err := sp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	r.originate(t, "10.5.119.0/24", "10.0.0.254")
	r.originate(t, "10.4.83.0/24", "10.0.0.254")
	eventually(t, "two learned prefixes (our own path is not one)", learnedIs(
		"10.4.83.0/24 via 10.0.0.254 from 127.0.0.1 path [64524]",
		"10.5.119.0/24 via 10.0.0.254 from 127.0.0.1 path [64524]"))
	eventually(t, "settled", func() error {
		mu.Lock()
		defer mu.Unlock()
		if !settled {
			return fmt.Errorf("not settled")
		}
		return nil
	})

	// Nothing changes, nothing is published: each publish wakes every part
	// of the agent, the BGP part's Set among them.
	mu.Lock()
	n := publishes
	mu.Unlock()
	for range 20 {
		if err := sp.Set(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(600 * time.Millisecond)
	mu.Lock()
	if publishes != n {
		t.Errorf("%d publishes without a change", publishes-n)
	}
	mu.Unlock()

	if err := r.srv.DeletePath(ctx, &api.DeletePathRequest{Family: r.family, Path: apiPath(Path{
		Prefix: netip.MustParsePrefix("10.4.83.0/24"), NextHop: netip.MustParseAddr("10.0.0.254")})}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the withdrawal", learnedIs("10.5.119.0/24 via 10.0.0.254 from 127.0.0.1 path [64524]"))

	// A new ASN restarts the speaker: what it learned goes, and comes back
	// with the new session.
	r.reconfigureSpeaker(t, speakerNewASN)
	d.Global.ASN = speakerNewASN
	d.Peers = []Peer{r.peerOfSpeaker(speakerNewASN)}
	if err := sp.Set(ctx, d); err != nil {
		t.Fatal(err)
	}
	eventually(t, "learned again after the restart", learnedIs("10.5.119.0/24 via 10.0.0.254 from 127.0.0.1 path [64524]"))

	// With no peers at all, nothing is learned.
	if err := sp.Set(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "nothing learned without peers", learnedIs())
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchLearned = %v", err)
	}
}
