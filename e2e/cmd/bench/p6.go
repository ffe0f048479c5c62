package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"routeagent.io/route-agent/e2e/bench"
)

const (
	p6Nodes    = 1000
	p6Services = 5000
	// p6Rounds is how many times the agent is started and measured.
	p6Rounds = 2
	// p6Quiet is how long the agent must use (almost) no CPU to count
	// as settled.
	p6Quiet = 3 * time.Second
)

// p6 measures the agent's resident memory with 1,000 Nodes and 5,000
// LoadBalancer Services (with their EndpointSlices, addresses in a bgp
// pool) in the API server. p6Rounds times, the agent is started with its
// default flags (so it also runs the allocator and, being the only agent,
// leads it: the figure) and then without the allocator, and measured once
// it has announced all 5,000 addresses and its CPU has been quiet for
// p6Quiet: VmRSS and VmHWM.
func p6(ctx context.Context, e *env) ([]row, error) {
	lb, err := lbEnsure(ctx, e)
	if err != nil {
		return nil, err
	}
	if err := lb.ensurePool(ctx, e.l, true); err != nil {
		return nil, err
	}
	// The floor: the same agent with none of P6's objects.
	var floor bench.Memory
	if lb.services == 0 && lb.nodes == 0 {
		if err := restartAgent(ctx, e.l, e.node, nil); err != nil {
			return nil, err
		}
		if err := lb.waitSession(ctx, nodeAddr, e.node.Name); err != nil {
			return nil, err
		}
		if floor, err = p6Settled(ctx, e); err != nil {
			return nil, err
		}
		logf("P6: with no Services and the lab's 4 Nodes, default flags: VmRSS %s (anonymous %s, files %s)", mib(floor.RSS), mib(floor.Anon), mib(floor.File))
	}
	logf("P6: %d Nodes and %d LoadBalancer Services into the API server", p6Nodes, p6Services)
	if err := lb.setServices(ctx, e, p6Services); err != nil {
		return nil, err
	}
	if err := lb.setNodes(ctx, p6Nodes); err != nil {
		return nil, err
	}
	defer func() {
		// The other figures run without P6's Nodes.
		if err := lb.setNodes(context.WithoutCancel(ctx), 0); err != nil {
			logf("P6: deleting its Nodes: %v", err)
		}
	}()
	// As deployed (every flag at its default), the only agent, so it
	// leads the allocator and caches the Services twice; then as the
	// other agents of a cluster run, not allocating.
	modes := []struct {
		name string
		args []string
	}{{"default flags, leading the allocator", nil}, {"not allocating (--lb-ipam=false)", speakerArgs}}
	if *pprofDir != "" {
		modes[0].args = []string{"--pprof-listen=" + pprofAddr}
	}
	var rss, hwm [2][]uint64
	for i := range p6Rounds {
		for m, mode := range modes {
			if err := restartAgent(ctx, e.l, e.node, mode.args); err != nil {
				return nil, err
			}
			if err := lb.waitTor(ctx, nodeAddr, p6Services, 2*time.Minute); err != nil {
				return nil, err
			}
			mem, err := p6Settled(ctx, e)
			if err != nil {
				return nil, err
			}
			logf("P6 round %d, %s: settled with VmRSS %s (anonymous %s, files %s), VmHWM %s; %s",
				i+1, mode.name, mib(mem.RSS), mib(mem.Anon), mib(mem.File), mib(mem.HWM), goMemory(ctx, e))
			rss[m], hwm[m] = append(rss[m], mem.RSS), append(hwm[m], mem.HWM)
			if *pprofDir != "" {
				saveAgentProfile(ctx, e, "heap", 30*time.Second, fmt.Sprintf("p6-round%d-mode%d.heap", i+1, m+1))
			}
		}
	}
	if err := lb.agentArgs(ctx, e, speakerArgs); err != nil {
		return nil, err
	}
	worst := func(v []uint64) uint64 {
		var m uint64
		for _, x := range v {
			m = max(m, x)
		}
		return m
	}
	r := worst(rss[0])
	empty := "—"
	if floor.RSS > 0 {
		empty = mib(floor.RSS)
	}
	return []row{{
		id: "P6",
		what: fmt.Sprintf("resident memory, %d Nodes and %d LB Services (EndpointSlices, announced), settled, leading the allocator (worst of %d; VmHWM %s; not allocating %s; no objects %s)",
			p6Nodes, p6Services, p6Rounds, mib(worst(hwm[0])), mib(worst(rss[1])), empty),
		agent: mib(r), peer: "—", ratio: "—", goal: "≤ 60 MiB", met: yesNo(r <= 60<<20),
	}}, nil
}

// p6Settled waits until the bench node's agent has used less than 2% of a
// CPU for p6Quiet, then reads its memory.
func p6Settled(ctx context.Context, e *env) (bench.Memory, error) {
	pid, err := e.l.AgentPID(e.node)
	if err != nil {
		return bench.Memory{}, err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		before, err := bench.ProcCPU(pid)
		if err != nil {
			return bench.Memory{}, err
		}
		select {
		case <-ctx.Done():
			return bench.Memory{}, ctx.Err()
		case <-time.After(p6Quiet):
		}
		after, err := bench.ProcCPU(pid)
		if err != nil {
			return bench.Memory{}, err
		}
		if after-before <= p6Quiet/50 {
			return bench.ProcMemory(pid)
		}
		if time.Now().After(deadline) {
			return bench.Memory{}, fmt.Errorf("the agent kept using CPU (%s in the last %s) for 2 minutes", after-before, p6Quiet)
		}
	}
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// goMemory is the Go runtime's own account of the bench node's agent's
// memory, from its metrics: what of the anonymous memory is live heap, and
// what is heap the runtime holds but has not given back.
func goMemory(ctx context.Context, e *env) string {
	text, err := e.l.Metrics(ctx, e.node)
	if err != nil {
		return fmt.Sprintf("Go runtime: %v", err)
	}
	v := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasPrefix(f[0], "go_memstats_") {
			v[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	m := func(k string) string { return mib(uint64(v["go_memstats_"+k])) }
	return fmt.Sprintf("Go heap: live %s, in use %s, idle %s of which released %s; stacks %s; next GC at %s",
		m("alloc_bytes"), m("heap_inuse_bytes"), m("heap_idle_bytes"), m("heap_released_bytes"), m("stack_inuse_bytes"), m("next_gc_bytes"))
}
