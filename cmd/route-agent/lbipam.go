package main

import (
	"context"
	"log/slog"

	"k8s.io/client-go/kubernetes"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/bgp/lbipam"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/engine"
)

// lbPools is what the address allocator needs of the snapshot.
type lbPools struct {
	pools   []bgpconfig.Pool
	inForce bool
}

// lbIPAMPart hands the bgp-config's pools to the allocator whenever they
// change; the allocator runs on its own (leader election, Service watch).
func lbIPAMPart(c *lbipam.Controller) engine.Part {
	return engine.Func("lbipam", func(s *snapshot.Snapshot) (lbPools, []string) {
		var p lbPools
		if s.BGP.Config != nil {
			p.pools, p.inForce = s.BGP.Config.Pools, true
		}
		return p, nil
	}, func(_ context.Context, p lbPools) error {
		c.SetPools(p.pools, p.inForce)
		return nil
	})
}

func newLBIPAM(client kubernetes.Interface, namespace, node string, log *slog.Logger) (*lbipam.Controller, error) {
	return lbipam.New(client, lbipam.Options{Namespace: namespace, Identity: node, Logger: log})
}
