package cni

import (
	"context"
	"log/slog"

	"routeagent.io/route-agent/cluster/snapshot"
)

// Part keeps the CNI config in its directory matching this node's pod
// CIDRs: the engine's "cni" part.
type Part struct {
	dir, ipamDir string
	log          *slog.Logger
}

// NewPart writes into dir; ipamDir is host-local's state directory, empty
// for the plugin's default.
func NewPart(dir, ipamDir string, log *slog.Logger) *Part {
	return &Part{dir: dir, ipamDir: ipamDir, log: log}
}

// Name implements engine.Part.
func (p *Part) Name() string { return "cni" }

// Reconcile implements engine.Part. Without pod CIDRs there is nothing to
// give pods addresses from; a file written earlier stays, since pods that
// exist keep their addresses.
func (p *Part) Reconcile(_ context.Context, s *snapshot.Snapshot) ([]string, error) {
	if s.Self == nil || len(s.Self.PodCIDRs) == 0 {
		return []string{"this node has no pod CIDRs (spec.podCIDRs): no CNI config written"}, nil
	}
	data, err := Conflist(Config{PodCIDRs: s.Self.PodCIDRs, IPAMDataDir: p.ipamDir})
	if err != nil {
		return nil, err
	}
	changed, err := Write(p.dir, data)
	if err != nil {
		return nil, err
	}
	if changed {
		p.log.Info("CNI config written", "dir", p.dir, "file", FileName, "podCIDRs", s.Self.PodCIDRs)
	}
	return nil, nil
}
