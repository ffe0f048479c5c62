package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"routeagent.io/route-agent/bgp/lbipam/allocator"
)

const (
	allocServices = 10_000
	allocRounds   = 9
)

// allocFig times the LoadBalancer address allocator (bgp/lbipam/allocator,
// what the elected agent runs) assigning 10,000 Services from fresh pools,
// in this process: allocator.BenchAssign, one in four Services dual-stack
// and one in four sharing an address with another. No peer: MetalLB's and
// Cilium's allocators are internal packages of their controllers.
func allocFig(ctx context.Context, _ *env) ([]row, error) {
	var ds []time.Duration
	for range allocRounds {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Each round starts with a clean heap: the lab's own garbage
		// would otherwise be collected in some rounds and not others.
		runtime.GC()
		d, err := allocator.BenchAssign(allocServices)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	m := median(ds)
	logf("A: %d Services assigned in %s (median; fastest %s; all: %s)", allocServices, ms1(m), ms1(slices.Min(ds)), list(ds))
	return []row{{
		id:    "A",
		what:  fmt.Sprintf("LB address allocator: %d Services assigned, ¼ dual-stack, ¼ sharing (in process, median of %d)", allocServices, allocRounds),
		agent: ms1(m), peer: "—", ratio: "—", goal: "report", met: "—",
	}}, nil
}

// ms1 is a duration in milliseconds with one decimal.
func ms1(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}
