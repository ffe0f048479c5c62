package cni

import (
	"context"
	"errors"
	"log/slog"

	"routeagent.io/route-agent/cluster/snapshot"
)

// Part keeps the CNI config in its directory matching this node's pod
// CIDRs: the engine's "cni" part.
type Part struct {
	dir, ipamDir string
	mtu          func() (int, bool)
	log          *slog.Logger
}

// NewPart writes into dir; ipamDir is host-local's state directory, empty
// for the plugin's default. mtu gives the MTU pods must use (0: the
// link's), and whether it is known yet: in tunnel mode only once the tunnel
// device exists.
func NewPart(dir, ipamDir string, mtu func() (int, bool), log *slog.Logger) *Part {
	return &Part{dir: dir, ipamDir: ipamDir, mtu: mtu, log: log}
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
	mtu, known := p.mtu()
	if !known {
		// A pod made now would get the link's MTU and lose large packets
		// in the tunnel; the engine retries shortly.
		return nil, errors.New("waiting for the tunnel device, whose MTU pods must use")
	}
	data, err := Conflist(Config{PodCIDRs: s.Self.PodCIDRs, IPAMDataDir: p.ipamDir, MTU: mtu})
	if err != nil {
		return nil, err
	}
	changed, err := Write(p.dir, data)
	if err != nil {
		return nil, err
	}
	if changed {
		p.log.Info("CNI config written", "dir", p.dir, "file", FileName, "podCIDRs", s.Self.PodCIDRs, "mtu", mtu)
	}
	return nil, nil
}
