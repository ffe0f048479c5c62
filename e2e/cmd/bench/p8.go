package main

import (
	"context"
	"fmt"

	"github.com/vishvananda/netns"

	"routeagent.io/route-agent/routing"
)

const p8Routes = 100_000

// p8 runs routing.BenchInstall in a throw-away namespace: the reconciler's
// Set installing 100,000 routes against one RouteReplace per route.
func p8(ctx context.Context, e *env) ([]row, error) {
	ns, err := e.l.AddNamespace(ctx, "p8")
	if err != nil {
		return nil, err
	}
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	logf("P8: %d routes in namespace %s: serial RouteReplace, then the reconciler's Set", p8Routes, ns)
	res, err := routing.BenchInstall(h, p8Routes)
	if err != nil {
		return nil, err
	}
	logf("P8: %s", res)
	return []row{{
		id:    "P8",
		what:  fmt.Sprintf("install %d routes: reconciler Set vs serial RouteReplace (no-op Set %s, %d changes)", res.Routes, ms(res.Noop), res.NoopChanges),
		agent: ms(res.Install), peer: "serial " + ms(res.Serial), ratio: fmt.Sprintf("%.1f×", res.Speedup()),
		goal: "≥ 2×", met: yesNo(res.Speedup() >= 2 && res.NoopChanges == 0),
	}}, nil
}
