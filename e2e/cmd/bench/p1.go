package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"routeagent.io/route-agent/e2e/bench"
)

// p1Rounds is how many times the Services are deleted for P1d: each round
// creates the 10,000 again, which takes the API server minutes here.
const p1Rounds = 1

// p1Round is one round of one speaker: the time from the change to the
// last announcement (or withdrawal) arriving at lbtor.
type p1Round struct {
	announce, withdraw time.Duration
	updates            int
}

// p1 measures the 10,000 Services' addresses reaching lbtor, from the
// agent and from FRR, *rounds times each, alternating who goes first:
//
//   - the agent: the Services exist with their addresses written and a
//     ready endpoint each, outside every pool of the bgp-config; the
//     benchmark's pool is added to the bgp-config (one ConfigMap write),
//     and the time runs until lbtor has received all 10,000 prefixes; then
//     the pool is removed, until all are withdrawn;
//   - FRR: lbfrr gets the same 10,000 prefixes as network statements in
//     one vtysh transaction, and then loses them in another.
//
// P1 is the announcement, P1w the withdrawal. P1d then deletes the
// Services (p1Rounds times, creating them again in between) and times
// their withdrawal at lbtor from the last deletion: the API server deletes
// a few hundred a second at best, so this says whether the agent keeps up.
// Arrival at lbtor is read from a packet capture in its namespace.
func p1(ctx context.Context, e *env) ([]row, error) {
	lb, err := lbEnsure(ctx, e)
	if err != nil {
		return nil, err
	}
	if err := lb.setServices(ctx, e, lbServices); err != nil {
		return nil, err
	}
	if err := lb.ensurePool(ctx, e.l, false); err != nil {
		return nil, err
	}
	if err := lb.waitTor(ctx, nodeAddr, 0, 2*time.Minute); err != nil {
		return nil, err
	}
	addFile, err := frrNetworksFile(e.l.Dir, false)
	if err != nil {
		return nil, err
	}
	delFile, err := frrNetworksFile(e.l.Dir, true)
	if err != nil {
		return nil, err
	}
	if lb.frrNetworks {
		if err := vtyshFile(ctx, lb.frr.Router, delFile); err != nil {
			return nil, err
		}
		lb.frrNetworks = false
	}
	if err := lb.waitTor(ctx, lbFRRAddr, 0, 2*time.Minute); err != nil {
		return nil, err
	}
	logf("P1: %d Services (addresses written, one ready endpoint each) → lbtor, route-agent against FRR, %d rounds each", lbServices, *rounds)

	agentRounds := 0
	agentRound := func() (p1Round, error) {
		agentRounds++
		if *pprofDir != "" {
			done := profileAgent(ctx, e, 3*time.Second, fmt.Sprintf("p1-agent-round%d.pprof", agentRounds))
			defer func() { <-done }()
		}
		var added, removed time.Time
		r, err := p1Measure(ctx, lb, nodeAddr, "route-agent",
			func() (t time.Time, err error) { added, err = lb.setPool(ctx, e.l, true); return added, err },
			func() (t time.Time, err error) { removed, err = lb.setPool(ctx, e.l, false); return removed, err })
		if err == nil {
			log := e.l.AgentLog(e.node, agentLogLines)
			logf("  route-agent after the pool was added: %s", agentTimeline(log, added, pathMilestones))
			logf("  route-agent after the pool was removed: %s", agentTimeline(log, removed, pathMilestones))
		}
		return r, err
	}
	frrRound := func() (p1Round, error) {
		commit := func(path string, on bool) (time.Time, error) {
			t0 := time.Now()
			if err := vtyshFile(ctx, lb.frr.Router, path); err != nil {
				return t0, err
			}
			lb.frrNetworks = on
			return t0, nil
		}
		return p1Measure(ctx, lb, lbFRRAddr, "FRR",
			func() (time.Time, error) { return commit(addFile, true) },
			func() (time.Time, error) { return commit(delFile, false) })
	}
	var agent, frr []p1Round
	for i := range *rounds {
		type turn struct {
			name string
			f    func() (p1Round, error)
			out  *[]p1Round
		}
		order := []turn{{"route-agent", agentRound, &agent}, {"FRR", frrRound, &frr}}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, t := range order {
			r, err := t.f()
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", i+1, t.name, err)
			}
			*t.out = append(*t.out, r)
			logf("P1 round %d %-11s: change → all %d at lbtor %s (%d UPDATEs); withdrawn → all gone %s",
				i+1, t.name, lbServices, ms(r.announce), r.updates, ms(r.withdraw))
		}
	}
	pick := func(rs []p1Round, f func(p1Round) time.Duration) (time.Duration, []time.Duration) {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, f(r))
		}
		return median(ds), ds
	}
	aAnn, aAnnAll := pick(agent, func(r p1Round) time.Duration { return r.announce })
	fAnn, fAnnAll := pick(frr, func(r p1Round) time.Duration { return r.announce })
	aPool, aPoolAll := pick(agent, func(r p1Round) time.Duration { return r.withdraw })
	fWd, fWdAll := pick(frr, func(r p1Round) time.Duration { return r.withdraw })
	logf("P1 announce: route-agent %s (median of %s), FRR %s (median of %s)", ms(aAnn), list(aAnnAll), ms(fAnn), list(fAnnAll))
	logf("P1 withdraw: route-agent, pool removed %s (median of %s); FRR, no network %s (median of %s)", ms(aPool), list(aPoolAll), ms(fWd), list(fWdAll))
	rows := []row{
		lbRow("P1", fmt.Sprintf("%d LB Services (address written, endpoint ready): pool added to bgp-config → all at the FRR ToR (median of %d)", lbServices, *rounds),
			aAnn, fAnn, "FRR network ×10000, one vtysh -f"),
		lbRow("P1w", fmt.Sprintf("the same, withdrawn: pool removed from bgp-config → all withdrawn at the FRR ToR (median of %d)", *rounds),
			aPool, fWd, "FRR no network ×10000"),
	}

	// P1d: the Services deleted.
	var lags, totals, apis []time.Duration
	for i := range p1Rounds {
		d, err := p1Delete(ctx, e, lb)
		if err != nil {
			return rows, fmt.Errorf("P1d round %d: %w", i+1, err)
		}
		logf("P1d round %d: %d Services deleted in %s; all withdrawn at lbtor %s after the last deletion, %s after the first",
			i+1, lbServices, ms(d.api), ms(d.lag), ms(d.total))
		lags, totals, apis = append(lags, d.lag), append(totals, d.total), append(apis, d.api)
	}
	lag := median(lags)
	logf("P1d: %s after the last deletion (median of %s), %s after the first (%s)", ms(lag), list(lags), ms(median(totals)), list(totals))
	rows = append(rows, row{
		id: "P1d", what: fmt.Sprintf("the %d Services deleted (the API server took %s) → all withdrawn at the FRR ToR, from the last deletion (rounds: %d)",
			lbServices, median(apis).Round(time.Second), p1Rounds),
		agent: ms(lag), peer: "—", ratio: "—", goal: "≤ 1 s", met: yesNo(lag <= time.Second),
	})
	return rows, nil
}

// lbRow is a row with P1's goals: at most 1 s, and at most 0.6× FRR.
func lbRow(id, what string, agent, frr time.Duration, peer string) row {
	ratio := agent.Seconds() / frr.Seconds()
	return row{
		id: id, what: what, agent: ms(agent), peer: fmt.Sprintf("%s %s", peer, ms(frr)), ratio: fmt.Sprintf("%.2f", ratio),
		goal: "≤ 1 s, ≤ 0.6× FRR", met: yesNo(agent <= time.Second && ratio <= 0.6),
	}
}

// p1Measure captures at lbtor while add makes the speaker at from announce
// the Services' prefixes and remove withdraws them, and times both to the
// last UPDATE's arrival.
func p1Measure(ctx context.Context, lb *lbEnv, addr netip.Addr, name string, add, remove func() (time.Time, error)) (p1Round, error) {
	var r p1Round
	c, err := bench.StartCapture(lb.tor.NS, "eth0")
	if err != nil {
		return r, err
	}
	defer c.Stop()
	t0, err := add()
	if err != nil {
		return r, err
	}
	at, cov, err := waitCover(ctx, c, addr, false, 2*time.Minute, name+" announcing")
	if err != nil {
		return r, err
	}
	r.announce, r.updates = at.Sub(t0), cov.Updates
	// The table, not only the wire: lbtor must hold them all.
	if err := lb.waitTor(ctx, addr, lbServices, time.Minute); err != nil {
		return r, err
	}
	t0, err = remove()
	if err != nil {
		return r, err
	}
	at, _, err = waitCover(ctx, c, addr, true, 2*time.Minute, name+" withdrawing")
	if err != nil {
		return r, err
	}
	r.withdraw = at.Sub(t0)
	if err := lb.waitTor(ctx, addr, 0, time.Minute); err != nil {
		return r, err
	}
	return r, c.Stop()
}

// p1Deletion is one round of P1d: how long the deletions took, and how
// long after the last (lag) and the first (total) lbtor had received
// every withdrawal.
type p1Deletion struct{ api, lag, total time.Duration }

// p1Delete makes the 10,000 Services exist and be announced, deletes
// them, and times their withdrawal at lbtor.
func p1Delete(ctx context.Context, e *env, lb *lbEnv) (p1Deletion, error) {
	var d p1Deletion
	if err := lb.setServices(ctx, e, lbServices); err != nil {
		return d, err
	}
	if err := lb.ensurePool(ctx, e.l, true); err != nil {
		return d, err
	}
	if err := lb.waitTor(ctx, nodeAddr, lbServices, 2*time.Minute); err != nil {
		return d, err
	}
	time.Sleep(2 * time.Second) // let the agent finish with them
	c, err := bench.StartCapture(lb.tor.NS, "eth0")
	if err != nil {
		return d, err
	}
	defer c.Stop()
	t0 := time.Now()
	last, err := lb.deleteServices(ctx, 0)
	if err != nil {
		return d, err
	}
	at, _, err := waitCover(ctx, c, nodeAddr, true, 2*time.Minute, "route-agent withdrawing deleted Services")
	if err != nil {
		return d, err
	}
	if err := lb.waitTor(ctx, nodeAddr, 0, time.Minute); err != nil {
		return d, err
	}
	d = p1Deletion{api: last.Sub(t0), lag: max(0, at.Sub(last)), total: at.Sub(t0)}
	return d, c.Stop()
}

// pprofAddr is where the bench node's agent serves its profiles with --pprof.
const pprofAddr = "127.0.0.1:9957"

// profileAgent takes a CPU profile of d from the bench node's agent into
// name in --pprof's directory, and closes the channel when it is written.
func profileAgent(ctx context.Context, e *env, d time.Duration, name string) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		saveAgentProfile(ctx, e, fmt.Sprintf("profile?seconds=%d", int(d.Seconds())), d+30*time.Second, name)
	}()
	return done
}

// saveAgentProfile writes the bench node's agent's /debug/pprof/<which>
// into name in --pprof's directory, and logs where (or why not).
func saveAgentProfile(ctx context.Context, e *env, which string, timeout time.Duration, name string) {
	b, err := e.l.AgentGet(ctx, e.node, "http://"+pprofAddr+"/debug/pprof/"+which, timeout)
	if err == nil {
		path := filepath.Join(*pprofDir, name)
		if err = os.WriteFile(path, b, 0o644); err == nil {
			logf("  profile of the agent: %s", path)
		}
	}
	if err != nil {
		logf("  profile of the agent: %v", err)
	}
}
