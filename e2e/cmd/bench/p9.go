package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"routeagent.io/route-agent/e2e/bench"
)

// p9Rounds is how many cold starts each speaker makes.
const p9Rounds = 3

// p9 measures a cold start: with the 10,000 Services (addresses written
// and in the benchmark's pool, one ready endpoint each) in the API server,
// the bench node's agent is stopped until lbtor has dropped its session,
// then started, and the time runs from its process's start until lbtor has
// received all 10,000 prefixes. The peer is lbfrr's bgpd, stopped and
// started the same way with the 10,000 network statements in its
// configuration. Each speaker p9Rounds times, alternating.
func p9(ctx context.Context, e *env) ([]row, error) {
	lb, err := lbEnsure(ctx, e)
	if err != nil {
		return nil, err
	}
	if err := lb.setServices(ctx, e, lbServices); err != nil {
		return nil, err
	}
	if err := lb.ensurePool(ctx, e.l, true); err != nil {
		return nil, err
	}
	if err := lb.waitTor(ctx, nodeAddr, lbServices, 2*time.Minute); err != nil {
		return nil, err
	}
	logf("P9: cold start with %d LoadBalancer Services in the API server → all at lbtor, route-agent against FRR, %d rounds each", lbServices, p9Rounds)
	agentRound := func() (time.Duration, error) {
		var pid int
		d, err := p9Measure(ctx, lb, nodeAddr, "route-agent",
			func() error { return e.l.StopAgent(e.node, 15*time.Second) },
			func() (int, error) {
				e.node.AgentArgs = speakerArgs
				if err := e.l.StartAgent(ctx, e.node); err != nil {
					return 0, err
				}
				pid, err = e.l.AgentPID(e.node)
				return pid, err
			})
		if err == nil {
			if started, serr := bench.ProcStart(pid); serr == nil {
				logf("  route-agent from its start: %s", agentTimeline(e.l.AgentLog(e.node, agentLogLines), started.Add(-10*time.Millisecond), startMilestones))
			}
		}
		return d, err
	}
	frrRound := func() (time.Duration, error) {
		return p9Measure(ctx, lb, lbFRRAddr, "FRR",
			func() error { return e.l.StopBGPD(lb.frr) },
			func() (int, error) {
				pid, err := e.l.StartBGPD(ctx, lb.frr, lbFRRConfig(true))
				if err == nil {
					lb.frrNetworks = true
				}
				return pid, err
			})
	}
	var agent, frr []time.Duration
	for i := range p9Rounds {
		type turn struct {
			name string
			f    func() (time.Duration, error)
			out  *[]time.Duration
		}
		order := []turn{{"route-agent", agentRound, &agent}, {"FRR", frrRound, &frr}}
		if i%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, t := range order {
			d, err := t.f()
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", i+1, t.name, err)
			}
			*t.out = append(*t.out, d)
			logf("P9 round %d %-11s: process start → all %d at lbtor %s", i+1, t.name, lbServices, ms(d))
		}
	}
	// Back to an lbfrr that announces nothing, as P1 expects.
	if err := e.l.StopBGPD(lb.frr); err != nil {
		return nil, err
	}
	if _, err := e.l.StartBGPD(ctx, lb.frr, lbFRRConfig(false)); err != nil {
		return nil, err
	}
	lb.frrNetworks = false
	if err := lb.waitSession(ctx, lbFRRAddr, "lbfrr"); err != nil {
		return nil, err
	}
	a, f := median(agent), median(frr)
	logf("P9: route-agent %s (median of %s), FRR %s (median of %s)", ms(a), list(agent), ms(f), list(frr))
	return []row{{
		id:    "P9",
		what:  fmt.Sprintf("cold start, %d LB Services in the API server: process start → all at the FRR ToR (median of %d)", lbServices, p9Rounds),
		agent: ms(a), peer: "FRR bgpd " + ms(f), ratio: fmt.Sprintf("%.2f", a.Seconds()/f.Seconds()),
		goal: "≤ 2 s", met: yesNo(a <= 2*time.Second),
	}}, nil
}

// p9Measure stops the speaker at addr, waits until lbtor has dropped it,
// starts it again, and returns the time from its process's start until
// lbtor had received every prefix.
func p9Measure(ctx context.Context, lb *lbEnv, addr netip.Addr, name string, stop func() error, start func() (int, error)) (time.Duration, error) {
	if err := stop(); err != nil {
		return 0, err
	}
	if err := lb.waitTorDown(ctx, addr); err != nil {
		return 0, err
	}
	c, err := bench.StartCapture(lb.tor.NS, "eth0")
	if err != nil {
		return 0, err
	}
	defer c.Stop()
	pid, err := start()
	if err != nil {
		return 0, err
	}
	started, err := bench.ProcStart(pid)
	if err != nil {
		return 0, err
	}
	at, _, err := waitCover(ctx, c, addr, false, 2*time.Minute, name+" starting")
	if err != nil {
		return 0, err
	}
	if err := lb.waitTor(ctx, addr, lbServices, time.Minute); err != nil {
		return 0, err
	}
	return at.Sub(started), c.Stop()
}
