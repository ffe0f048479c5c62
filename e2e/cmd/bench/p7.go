package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"routeagent.io/route-agent/e2e/bench"
	"routeagent.io/route-agent/routing"
)

const (
	// p7Rounds restarts per speaker, fewer when a restart is slow.
	p7Rounds = 3
	// p7Slow is a restart slow enough not to repeat, for the time budget.
	p7Slow = 30 * time.Second
	// p7After is how long the route events are counted after the resync.
	p7After = 3 * time.Second
)

// p7 gives BIRD and then the bench node's agent the 100k feed, and kills
// and restarts each (SIGKILL, then start again) with its 100,000 routes in
// the kernel, counting the kernel's route events meanwhile and timing the
// resync. BIRD goes first, while the agent has no session, so that neither
// measurement shares the CPU with the other's install; BIRD's figures stand
// even when the agent's cannot be measured.
func p7(ctx context.Context, e *env) ([]row, error) {
	f := e.feed100k
	logf("P7: %d prefixes from %s, to BIRD, then to route-agent", f.n, f.r.Name)
	var bChanges []int
	var bFull []time.Duration
	berr := func() error {
		// BIRD keeps the P2 feed's protocol (its session shut on the feed's
		// side) out of this: a BGP protocol that never comes up would hold
		// its graceful restart recovery for the whole wait timer (240 s).
		if err := e.l.ReconfigureBird(ctx, e.bird, birdConfig(e.bird.Dir, f)); err != nil {
			return err
		}
		t0 := time.Now()
		if err := installFeed(ctx, e.birdNS, birdProto, f, birdAddr, "BIRD"); err != nil {
			return err
		}
		logf("P7: BIRD has all %d routes in its kernel %s after its session opened", f.n, ms(time.Since(t0)))
		time.Sleep(2 * time.Second)
		for i := range p7Rounds {
			began := time.Now()
			ch, full, err := p7Bird(ctx, e, f)
			if err != nil {
				return fmt.Errorf("BIRD restart %d: %w", i+1, err)
			}
			logf("P7 restart %d BIRD -R: %d route changes (%d deletions) from the kill until %s after the resync; start → graceful restart recovery done with all %d %s",
				i+1, ch.n, ch.dels, p7After, f.n, ms(full))
			bChanges, bFull = append(bChanges, ch.n), append(bFull, full)
			if time.Since(began) > p7Slow {
				break
			}
		}
		return nil
	}()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	var aChanges []int
	var aApplied, aFull []time.Duration
	aerr := func() error {
		if _, err := e.l.ApplyBGPConfig(ctx, bgpConfig(f)); err != nil {
			return err
		}
		t0 := time.Now()
		if err := installFeed(ctx, e.node.NS, routing.Protocol, f, nodeAddr, "route-agent"); err != nil {
			return err
		}
		logf("P7: route-agent has all %d routes in its kernel %s after its session opened", f.n, ms(time.Since(t0)))
		// Let it settle: the agent's learned table counts as settled once
		// its session has been up 3 s and quiet 1 s.
		time.Sleep(5 * time.Second)
		for i := range p7Rounds {
			began := time.Now()
			r, err := p7Agent(ctx, e, f)
			if err != nil {
				// What was seen until then still counts.
				if r.Changes > 0 {
					aChanges = append(aChanges, r.Changes)
				}
				if r.Applied > 0 {
					aApplied = append(aApplied, r.Applied)
				}
				return fmt.Errorf("route-agent restart %d: %w", i+1, err)
			}
			logf("P7 restart %d route-agent: %d route changes (%d deletions) from the kill until %s after the resync; start → routing part applied %s, → full resync %s",
				i+1, r.Changes, r.Deletes, p7After, ms(r.Applied), ms(r.Full))
			aChanges, aApplied, aFull = append(aChanges, r.Changes), append(aApplied, r.Applied), append(aFull, r.Full)
			if time.Since(began) > p7Slow {
				logf("P7: that restart took %s; no more rounds", time.Since(began).Round(time.Second))
				break
			}
		}
		return nil
	}()
	if aerr != nil {
		logf("P7 route-agent: %v", aerr)
	}
	if berr != nil {
		logf("P7 BIRD: %v", berr)
	}
	worst := func(v []int) string {
		if len(v) == 0 {
			return "—"
		}
		return fmt.Sprint(slices.Max(v))
	}
	agentChanges := worst(aChanges)
	if aerr != nil && len(aChanges) > len(aFull) {
		agentChanges = "≥ " + agentChanges // counted until the restart was given up
	}
	dur := func(v []time.Duration) string {
		if len(v) == 0 {
			return "—"
		}
		return ms(median(v))
	}
	first := true
	note := func(s string) string {
		switch {
		case aerr == nil:
		case first:
			s += "; route-agent: " + short(aerr)
		default:
			s += "; route-agent not measured, see P7"
		}
		first = false
		return s
	}
	ratio := "—"
	if len(aFull) > 0 && len(bFull) > 0 {
		ratio = fmt.Sprintf("%.2f", median(aFull).Seconds()/median(bFull).Seconds())
	}
	logf("P7: route changes route-agent %v, BIRD %v; route-agent applied %s (%s), settled and applied %s (%s); BIRD recovered %s (%s)",
		aChanges, bChanges, dur(aApplied), list(aApplied), dur(aFull), list(aFull), dur(bFull), list(bFull))
	rows := []row{
		{
			id: "P7", what: note(fmt.Sprintf("kill -9 + restart with %d routes: kernel route changes, kill → %s after resync (worst of %d/%d)", f.n, p7After, len(aChanges), len(bChanges))),
			agent: agentChanges, peer: "BIRD -R " + worst(bChanges), ratio: "—", goal: "0",
			met: yesNo(len(aChanges) > 0 && slices.Max(aChanges) == 0),
		},
		{
			id: "P7b", what: note(fmt.Sprintf("restart: agent start → routing part applied again (lastSuccess; median of %d)", len(aApplied))),
			agent: dur(aApplied), peer: "—", ratio: "—", goal: "≤ 1 s", met: yesNo(len(aApplied) > 0 && median(aApplied) <= time.Second),
		},
		{
			id: "P7c", what: note(fmt.Sprintf("restart: start → full resync: all %d resent, settled, applied (BIRD: GR recovery done; median of %d/%d)", f.n, len(aFull), len(bFull))),
			agent: dur(aFull), peer: "BIRD -R " + dur(bFull), ratio: ratio, goal: "≤ 1 s", met: yesNo(len(aFull) > 0 && median(aFull) <= time.Second),
		},
	}
	return rows, errors.Join(aerr, berr)
}

// installFeed opens f's session to the speaker at addr and waits until all
// of f's prefixes are in namespace ns's kernel with protocol proto.
func installFeed(ctx context.Context, ns string, proto int, f *feed, addr netip.Addr, name string) error {
	w, err := bench.WatchRoutes(ns, f.ours(proto))
	if err != nil {
		return err
	}
	defer w.Close()
	w.Expect(f.n)
	if err := f.neighbor(ctx, addr, true); err != nil {
		return err
	}
	_, err = waitRoutes(ctx, w, f.n, *p7Wait, name+" installing the 100k feed")
	return err
}

// eventCount is the route events seen, and how many were deletions.
type eventCount struct{ n, dels int }

// p7Result is one restart of the agent. A restart that did not finish has
// Full zero, and Changes counts the events until it was given up.
type p7Result struct {
	Changes       int
	Deletes       int
	Applied, Full time.Duration
}

// p7Agent kills the agent, starts it again, and waits until its routing
// part has applied again (the first success, Applied), and then for the
// full resync (Full): the agent's learned table has settled (its log says
// so), the kernel holds all of the feed's routes, and the routing part has
// applied a plan made after both, so that nothing is kept from the earlier
// run any more and the kernel holds what the peers resent.
func p7Agent(ctx context.Context, e *env, f *feed) (res p7Result, err error) {
	n := e.node
	w, err := bench.WatchRoutes(n.NS, f.ours(routing.Protocol))
	if err != nil {
		return res, err
	}
	defer w.Close()
	w.Expect(f.n)
	if err := w.Seed(); err != nil {
		return res, err
	}
	if _, ok := w.Complete(f.n); !ok {
		return res, fmt.Errorf("%d of the feed's routes in the kernel before the kill, want %d", w.Present(), f.n)
	}
	if err := e.l.KillAgent(n); err != nil {
		return res, err
	}
	time.Sleep(500 * time.Millisecond) // the kubelet does not restart it at once either
	start := time.Now()
	if err := e.l.StartAgent(ctx, n); err != nil {
		return res, err
	}
	// fail gives up, with the changes seen so far.
	fail := func(format string, args ...any) (p7Result, error) {
		res.Changes = w.Events()
		return res, fmt.Errorf(format+" (%d route changes by then, %d of %d routes in the kernel)", append(args, res.Changes, w.Present(), f.n)...)
	}
	deadline := start.Add(*p7Wait)
	// The routing part's first success after the start.
	for res.Applied == 0 {
		if time.Now().After(deadline) {
			return fail("the routing part did not apply within %s of the start", *p7Wait)
		}
		st, err := routingPart(ctx, e.l, n)
		if err != nil {
			return res, err
		}
		if st.LastSuccess != nil && st.LastSuccess.After(start) {
			res.Applied = st.LastSuccess.Sub(start)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var settleLogged bool
	lastLog := time.Now()
	for res.Full == 0 {
		if time.Now().After(deadline) {
			return fail("no full resync within %s of the start", *p7Wait)
		}
		settledAt, routes, settled := settledSince(e.l.AgentLog(n, 2000), start)
		if settled && !settleLogged {
			logf("  +%s: the agent's learned table settled with %d routes", ms(settledAt.Sub(start)), routes)
			settleLogged = true
		}
		completeAt, complete := w.Complete(f.n)
		st, err := routingPart(ctx, e.l, n)
		if err != nil {
			return res, err
		}
		if settled && complete && st.LastSuccess != nil && st.LastRun != nil && st.LastSuccess.Equal(*st.LastRun) {
			began := st.LastRun.Add(-time.Duration(st.LastDurationMs+1) * time.Millisecond)
			if !began.Before(settledAt) && !st.LastRun.Before(completeAt) {
				res.Full = st.LastSuccess.Sub(start)
				break
			}
		}
		if time.Since(lastLog) > 15*time.Second {
			logf("  +%s: learned table settled %v, %d of %d routes in the kernel, %d route changes so far",
				time.Since(start).Round(time.Second), settled, w.Present(), f.n, w.Events())
			lastLog = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(p7After)
	if err := w.Err(); err != nil {
		return res, fmt.Errorf("route events lost, cannot count them: %w", err)
	}
	res.Changes, res.Deletes = w.Events(), w.Deletes()
	if got, err := bench.CountRoutes(n.NS, f.ours(routing.Protocol)); err != nil || got != f.n {
		return res, fmt.Errorf("%d of the feed's routes in the kernel after the restart, want %d (%v)", got, f.n, err)
	}
	return res, nil
}

// p7Bird kills BIRD and starts it again with -R (graceful restart
// recovery), as calico-node runs it, and waits until the recovery is done
// with the feed's session up and its routes imported.
func p7Bird(ctx context.Context, e *env, f *feed) (changes eventCount, full time.Duration, err error) {
	w, err := bench.WatchRoutes(e.birdNS, nil)
	if err != nil {
		return changes, 0, err
	}
	defer w.Close()
	if err := e.l.KillBird(e.bird); err != nil {
		return changes, 0, err
	}
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	if err := e.l.RestartBird(ctx, e.bird, true); err != nil {
		return changes, 0, err
	}
	var fullAt time.Time
	deadline := start.Add(*p7Wait)
	imported := fmt.Sprintf("%d imported", f.n)
	for fullAt.IsZero() {
		if time.Now().After(deadline) {
			return changes, 0, fmt.Errorf("BIRD had not recovered %s after the start:\n%s", *p7Wait, e.bird.Log(20))
		}
		q := time.Now()
		st, err := e.bird.Ctl(ctx, "show status")
		if err != nil {
			return changes, 0, err
		}
		pr, err := e.bird.Ctl(ctx, "show protocols all "+f.r.Name)
		if err != nil {
			return changes, 0, err
		}
		if !strings.Contains(st, "recovery") && strings.Contains(pr, "Established") && strings.Contains(pr, imported) {
			fullAt = q
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(p7After)
	if err := w.Err(); err != nil {
		return changes, 0, fmt.Errorf("route events lost, cannot count them: %w", err)
	}
	changes = eventCount{w.Events(), w.Deletes()}
	got, err := bench.CountRoutes(e.birdNS, f.ours(birdProto))
	if err != nil {
		return changes, 0, err
	}
	if got != f.n {
		return changes, 0, fmt.Errorf("%d of the feed's routes in BIRD's kernel after the restart, want %d", got, f.n)
	}
	return changes, fullAt.Sub(start), nil
}

// settledSince finds the agent's "bgp learned routes settled" log line
// written after since, and returns its time and route count.
func settledSince(log string, since time.Time) (time.Time, int, bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="bgp learned routes settled"`) {
			continue
		}
		var at time.Time
		routes := -1
		for _, field := range strings.Fields(line) {
			k, v, _ := strings.Cut(field, "=")
			switch k {
			case "time":
				at, _ = time.Parse(time.RFC3339Nano, v)
			case "routes":
				routes, _ = strconv.Atoi(v)
			}
		}
		if at.After(since) {
			return at, routes, true
		}
	}
	return time.Time{}, 0, false
}
