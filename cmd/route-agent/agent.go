package main

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "routeagent.io/route-agent/api/v1"
	"routeagent.io/route-agent/bgp"
	"routeagent.io/route-agent/cluster"
)

// agent ties the snapshot to the BGP plan and speaker, and answers the API
// from what it last saw and did.
type agent struct {
	apiv1.UnimplementedAgentServer
	log     *slog.Logger
	speaker *bgp.Speaker
	snaps   chan *cluster.Snapshot

	mu       sync.Mutex
	snap     *cluster.Snapshot
	warnings []string
	applyErr error
}

func newAgent(log *slog.Logger, speaker *bgp.Speaker) *agent {
	return &agent{log: log, speaker: speaker, snaps: make(chan *cluster.Snapshot, 1)}
}

// publish hands over a new snapshot, replacing one not yet taken: only the
// latest state matters.
func (a *agent) publish(s *cluster.Snapshot) {
	select {
	case <-a.snaps:
	default:
	}
	a.snaps <- s
}

// reconcileLoop applies each new snapshot, retries failed applies with
// backoff, and re-applies everything every resync period.
func (a *agent) reconcileLoop(ctx context.Context, resync time.Duration) error {
	const minRetry, maxRetry = time.Second, 30 * time.Second
	retry := minRetry
	timer := time.NewTimer(resync)
	defer timer.Stop()
	var snap *cluster.Snapshot
	for {
		select {
		case <-ctx.Done():
			return nil
		case snap = <-a.snaps:
		case <-timer.C:
		}
		if snap == nil {
			timer.Reset(resync)
			continue
		}
		if err := a.apply(ctx, snap); err != nil {
			timer.Reset(retry)
			retry = min(2*retry, maxRetry)
			continue
		}
		retry = minRetry
		timer.Reset(resync)
	}
}

func (a *agent) apply(ctx context.Context, s *cluster.Snapshot) error {
	d, warnings := bgp.Plan(s, a.speaker.Global())
	a.mu.Lock()
	// Every snapshot is planned again; say a warning once, not per event.
	if !slices.Equal(warnings, a.warnings) {
		for _, w := range warnings {
			a.log.Warn("bgp plan", "warning", w)
		}
	}
	a.mu.Unlock()
	err := a.speaker.Set(ctx, d)
	if err != nil {
		a.log.Error("applying bgp plan", "err", err)
	}
	a.mu.Lock()
	a.snap, a.warnings, a.applyErr = s, warnings, err
	a.mu.Unlock()
	return err
}

func (a *agent) Status(context.Context, *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &apiv1.StatusResponse{Warnings: a.warnings}
	if g := a.speaker.Global(); g.ASN != 0 {
		r.BgpAsn, r.BgpRouterId = g.ASN, g.RouterID.String()
	}
	if a.applyErr != nil {
		r.BgpApplyError = a.applyErr.Error()
	}
	s := a.snap
	if s == nil {
		return r, nil
	}
	r.NodeName = s.NodeName
	if s.Self != nil {
		r.NodeKnown = true
		for _, ip := range s.Self.InternalIPs {
			r.NodeIps = append(r.NodeIps, ip.String())
		}
		for _, c := range s.Self.PodCIDRs {
			r.PodCidrs = append(r.PodCidrs, c.String())
		}
	}
	r.BgpConfig = &apiv1.ConfigStatus{
		Source:                 s.BGP.Source,
		Present:                s.BGP.Present,
		AppliedResourceVersion: s.BGP.AppliedVersion,
		ErrorResourceVersion:   s.BGP.ErrVersion,
	}
	if s.BGP.Err != nil {
		r.BgpConfig.Error = s.BGP.Err.Error()
	}
	return r, nil
}

func (a *agent) ListBGPPeers(ctx context.Context, _ *apiv1.ListBGPPeersRequest) (*apiv1.ListBGPPeersResponse, error) {
	peers, err := a.speaker.Peers(ctx)
	if err != nil {
		return nil, err
	}
	r := &apiv1.ListBGPPeersResponse{}
	for _, p := range peers {
		r.Peers = append(r.Peers, &apiv1.BGPPeerFamily{
			LocalAs:       p.LocalASN,
			PeerAs:        p.PeerASN,
			PeerAddress:   p.PeerAddress,
			PeerPort:      p.PeerPort,
			SessionState:  p.SessionState,
			UptimeSeconds: int64(p.Uptime.Seconds()),
			Family:        p.Family,
			Received:      p.Received,
			Advertised:    p.Advertised,
		})
	}
	return r, nil
}

func (a *agent) ListBGPRoutes(ctx context.Context, r *apiv1.ListBGPRoutesRequest) (*apiv1.ListBGPRoutesResponse, error) {
	var peer netip.Addr
	if r.GetPeerAddress() != "" {
		var err error
		if peer, err = netip.ParseAddr(r.GetPeerAddress()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "peer address %q: %v", r.GetPeerAddress(), err)
		}
	}
	routes, err := a.speaker.Routes(ctx, r.GetDirection() == apiv1.ListBGPRoutesRequest_ADVERTISED, peer)
	if err != nil {
		return nil, err
	}
	resp := &apiv1.ListBGPRoutesResponse{}
	for _, rt := range routes {
		resp.Routes = append(resp.Routes, &apiv1.BGPRoute{
			PeerAddress: rt.PeerAddress, Family: rt.Family, Prefix: rt.Prefix.String(),
			NextHop: rt.NextHop, AsPath: rt.ASPath,
		})
	}
	return resp, nil
}
