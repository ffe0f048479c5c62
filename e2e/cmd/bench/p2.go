package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"routeagent.io/route-agent/e2e/bench"
	"routeagent.io/route-agent/routing"
)

// speaker is one receiver of the feed: the bench node's route-agent or
// BIRD, with the namespace it installs into and the protocol its routes
// carry there.
type speaker struct {
	name  string
	ns    string
	addr  netip.Addr
	proto int
}

// p2Result is one round of P2 for one speaker.
type p2Result struct {
	tl       bench.Timeline
	complete time.Time // the feed's last route in the kernel
}

func (r p2Result) established() time.Duration { return r.complete.Sub(r.tl.Established) }
func (r p2Result) afterLast() time.Duration   { return r.complete.Sub(r.tl.LastUpdate) }

// p2 opens the 10k feed's session to each speaker in turn, rounds times,
// alternating who goes first, and times the routes into the kernel.
func p2(ctx context.Context, e *env) ([]row, error) {
	f := e.feed10k
	agent := speaker{name: "route-agent", ns: e.node.NS, addr: nodeAddr, proto: routing.Protocol}
	bird := speaker{name: "BIRD", ns: e.birdNS, addr: birdAddr, proto: birdProto}
	logf("P2: %d prefixes from %s, %d rounds per speaker, one session at a time", f.n, f.r.Name, *rounds)
	res := map[string][]p2Result{}
	for i := range *rounds {
		order := []speaker{agent, bird}
		if i%2 == 1 {
			order = []speaker{bird, agent}
		}
		for _, s := range order {
			r, err := p2Round(ctx, e, f, s)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", i+1, s.name, err)
			}
			res[s.name] = append(res[s.name], r)
			logf("P2 round %d %-11s: Established→first UPDATE %s, →last UPDATE %s (%d UPDATEs, %d NLRI), →%d routes in the kernel %s; last UPDATE→last route %s",
				i+1, s.name, ms(r.tl.FirstUpdate.Sub(r.tl.Established)), ms(r.tl.LastUpdate.Sub(r.tl.Established)),
				r.tl.Updates, r.tl.NLRI, f.n, ms(r.established()), ms(r.afterLast()))
		}
	}
	est := func(name string) (time.Duration, []time.Duration) {
		var ds []time.Duration
		for _, r := range res[name] {
			ds = append(ds, r.established())
		}
		return median(ds), ds
	}
	last := func(name string) (time.Duration, []time.Duration) {
		var ds []time.Duration
		for _, r := range res[name] {
			ds = append(ds, r.afterLast())
		}
		return median(ds), ds
	}
	aEst, aEstAll := est(agent.name)
	bEst, bEstAll := est(bird.name)
	aLast, aLastAll := last(agent.name)
	bLast, bLastAll := last(bird.name)
	logf("P2 Established→all in kernel: route-agent %s (median of %s), BIRD %s (median of %s)", ms(aEst), list(aEstAll), ms(bEst), list(bEstAll))
	logf("P2b last UPDATE→last route: route-agent %s (median of %s), BIRD %s (median of %s)", ms(aLast), list(aLastAll), ms(bLast), list(bLastAll))
	ratio := aEst.Seconds() / bEst.Seconds()
	return []row{
		{
			id: "P2", what: fmt.Sprintf("%d prefixes from FRR: Established → all in the kernel (median of %d)", f.n, *rounds),
			agent: ms(aEst), peer: "BIRD " + ms(bEst), ratio: fmt.Sprintf("%.2f", ratio),
			goal: "ratio ≤ 1", met: yesNo(ratio <= 1),
		},
		{
			id: "P2b", what: "last UPDATE received → last route in the kernel",
			agent: ms(aLast), peer: "BIRD " + ms(bLast), ratio: fmt.Sprintf("%.2f", aLast.Seconds()/bLast.Seconds()),
			goal: "≤ 50 ms", met: yesNo(aLast <= 50*time.Millisecond),
		},
	}, nil
}

// p2Round opens the feed's session to s, waits for every prefix in s's
// kernel, and closes the session again, waiting for the routes to go.
func p2Round(ctx context.Context, e *env, f *feed, s speaker) (p2Result, error) {
	var res p2Result
	w, err := bench.WatchRoutes(s.ns, f.ours(s.proto))
	if err != nil {
		return res, err
	}
	defer w.Close()
	if n, err := bench.CountRoutes(s.ns, f.ours(s.proto)); err != nil || n != 0 {
		return res, fmt.Errorf("%d of the feed's routes in the kernel before the round (%v)", n, err)
	}
	w.Expect(f.n)
	c, err := bench.StartCapture(s.ns, "eth0")
	if err != nil {
		return res, err
	}
	defer c.Stop()
	if err := f.neighbor(ctx, s.addr, true); err != nil {
		return res, err
	}
	res.complete, err = waitRoutes(ctx, w, f.n, 2*time.Minute, s.name+" installing the feed")
	if err != nil {
		return res, err
	}
	// The End-of-RIB may still be on its way.
	time.Sleep(200 * time.Millisecond)
	if err := c.Stop(); err != nil {
		return res, fmt.Errorf("capture: %w", err)
	}
	sess, ok := bench.Best(c.Sessions(f.r.Addr, s.addr))
	if !ok {
		return res, fmt.Errorf("no BGP session from %s captured", f.r.Addr)
	}
	res.tl = sess.Timeline()
	if res.tl.Established.IsZero() || res.tl.LastUpdate.IsZero() || res.tl.NLRI < f.n {
		return res, fmt.Errorf("capture incomplete: %+v", res.tl)
	}
	// Close the session; the speaker removes the routes. Not at once: an
	// agent keeps the routes it finds in the kernel until its learned
	// table has settled (session up 3 s, quiet 1 s), so as not to drop an
	// earlier run's routes on a restart; closing the session earlier would
	// leave them for its 90 s settling limit.
	time.Sleep(max(1500*time.Millisecond, time.Until(res.tl.Established.Add(4500*time.Millisecond))))
	w.Expect(0)
	if err := f.neighbor(ctx, s.addr, false); err != nil {
		return res, err
	}
	if _, err := w.Wait(ctx, 0, time.Minute); err != nil {
		return res, fmt.Errorf("after closing the session: %w", err)
	}
	return res, nil
}
