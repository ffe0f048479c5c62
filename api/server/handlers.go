package server

import (
	"cmp"
	"context"
	"net/netip"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "routeagent.io/route-agent/api/v1"
	"routeagent.io/route-agent/bgp"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/engine"
	"routeagent.io/route-agent/masq"
	"routeagent.io/route-agent/routing"
	"routeagent.io/route-agent/version"
)

// Engine is what the API reads of the agent's engine.
type Engine interface {
	Snapshot() *snapshot.Snapshot
	Status() []engine.PartStatus
	Ready() (bool, []string)
}

// Speaker is what the API reads of the BGP speaker.
type Speaker interface {
	Global() bgp.Global
	Peers(ctx context.Context) ([]bgp.PeerStatus, error)
	Routes(ctx context.Context, advertised bool, peer netip.Addr) ([]bgp.RouteStatus, error)
}

// Routing is what the API reads of the routing part.
type Routing interface {
	Routes() []routing.RouteView
	Options() routing.PlanOptions
	Stats() routing.Stats
	MTU() (int, bool)
}

// Masquerade is what the API reads of the masquerade part; nil when
// masquerading is off.
type Masquerade interface {
	Desired() (masq.Desired, bool)
	Options() masq.Options
	Datapath() masq.Datapath
}

// Handlers answer routectl from what the agent last saw and did.
type Handlers struct {
	apiv1.UnimplementedAgentServer
	Engine Engine
	// Speaker is nil when BGP is disabled on this node (--bgp-config "").
	Speaker Speaker
	Routing Routing
	// Masquerade is nil when masquerading is off.
	Masquerade Masquerade
}

// Status implements apiv1.AgentServer.
func (h *Handlers) Status(context.Context, *apiv1.StatusRequest) (*apiv1.StatusResponse, error) {
	r := &apiv1.StatusResponse{Version: version.Version, Commit: version.Commit}
	if h.Speaker != nil {
		if g := h.Speaker.Global(); g.ASN != 0 {
			r.BgpAsn, r.BgpRouterId = g.ASN, g.RouterID.String()
		}
	}
	r.Ready, r.NotReadyReasons = h.Engine.Ready()
	for _, st := range h.Engine.Status() {
		r.Parts = append(r.Parts, &apiv1.PartStatus{
			Name: st.Name, State: st.State(), Runs: st.Runs, Failures: st.Failures,
			LastRunUnixMs: unixMs(st.LastRun), LastSuccessUnixMs: unixMs(st.LastSuccess),
			LastDurationMs: st.LastDuration.Milliseconds(), LastError: st.LastError,
			FailingSinceUnixMs: unixMs(st.FailingSince), NextRetryUnixMs: unixMs(st.NextRetry),
			Warnings: st.Warnings,
		})
	}
	r.Routing = h.routingStatus()
	s := h.Engine.Snapshot()
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
	// Left out when BGP is disabled: routectl says so rather than report a
	// bgp-config that is not looked for.
	if h.Speaker != nil {
		r.BgpConfig = configStatus(s.BGP.Source, s.BGP.Present, s.BGP.AppliedVersion, s.BGP.ErrVersion, s.BGP.Err)
	}
	if s.IPMasq.Source != "" {
		r.IpMasqConfig = configStatus(s.IPMasq.Source, s.IPMasq.Present, s.IPMasq.AppliedVersion, s.IPMasq.ErrVersion, s.IPMasq.Err)
	}
	r.Masquerade = h.masqueradeStatus()
	return r, nil
}

func configStatus(source string, present bool, applied, errVersion string, err error) *apiv1.ConfigStatus {
	c := &apiv1.ConfigStatus{Source: source, Present: present, AppliedResourceVersion: applied, ErrorResourceVersion: errVersion}
	if err != nil {
		c.Error = err.Error()
	}
	return c
}

func (h *Handlers) masqueradeStatus() *apiv1.MasqueradeStatus {
	if h.Masquerade == nil {
		return nil
	}
	o := h.Masquerade.Options()
	name := h.Masquerade.Datapath().Name()
	m := &apiv1.MasqueradeStatus{Enabled: o.IPv4 || o.IPv6, Implementation: name, Ipv4: o.IPv4, Ipv6: o.IPv6,
		PortMin: uint32(o.PortMin), PortMax: uint32(o.PortMax)}
	for _, p := range o.NativeRoutingCIDRs {
		m.NativeRoutingCidrs = append(m.NativeRoutingCidrs, p.String())
	}
	d, ok := h.Masquerade.Desired()
	if !ok {
		return m
	}
	for _, dev := range d.Devices {
		m.Devices = append(m.Devices, dev.Name)
	}
	m.Summary = masq.Summary(name, d.Devices, o.NativeRoutingCIDRs)
	m.RoutablePrefixes = uint32(len(d.Set.Entries))
	return m
}

// ListIPMasq implements apiv1.AgentServer.
func (h *Handlers) ListIPMasq(context.Context, *apiv1.ListIPMasqRequest) (*apiv1.ListIPMasqResponse, error) {
	if h.Masquerade == nil {
		return nil, status.Error(codes.FailedPrecondition, "masquerading is off on this node (--enable-ipv4-masquerade and --enable-ipv6-masquerade are false)")
	}
	d, ok := h.Masquerade.Desired()
	if !ok {
		return nil, status.Error(codes.Unavailable, "the masquerade part has not applied a plan yet")
	}
	r := &apiv1.ListIPMasqResponse{}
	for _, e := range d.Set.Entries {
		x := &apiv1.IPMasqEntry{Prefix: e.Prefix.String()}
		for _, why := range e.Reasons {
			x.Reasons = append(x.Reasons, &apiv1.IPMasqReason{Kind: why.Kind, Detail: why.Detail})
		}
		r.Entries = append(r.Entries, x)
	}
	for _, p := range d.Set.NonMasqSources {
		r.NonMasqueradeSources = append(r.NonMasqueradeSources, p.String())
	}
	return r, nil
}

// ListServices implements apiv1.AgentServer.
func (h *Handlers) ListServices(context.Context, *apiv1.ListServicesRequest) (*apiv1.ListServicesResponse, error) {
	r := &apiv1.ListServicesResponse{}
	for _, st := range bgp.LBStatuses(h.Engine.Snapshot()) {
		x := &apiv1.LBService{Namespace: st.Namespace, Name: st.Name, Pool: st.Pool, Advertised: st.Advertised, Reason: st.Reason}
		for _, a := range st.Addresses {
			x.Addresses = append(x.Addresses, a.String())
		}
		r.Services = append(r.Services, x)
	}
	return r, nil
}

// ListNAT implements apiv1.AgentServer.
func (h *Handlers) ListNAT(context.Context, *apiv1.ListNATRequest) (*apiv1.ListNATResponse, error) {
	if h.Masquerade == nil {
		return nil, status.Error(codes.FailedPrecondition, "masquerading is off on this node")
	}
	ts, err := h.Masquerade.Datapath().Translations()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading the NAT table: %v", err)
	}
	r := &apiv1.ListNATResponse{Supported: ts != nil}
	for _, t := range ts {
		r.Entries = append(r.Entries, &apiv1.NATEntry{Protocol: t.Proto, Pod: t.Pod.String(), Nat: t.NAT.String(),
			Remote: t.Remote.String(), IdleMs: t.Idle.Milliseconds()})
	}
	return r, nil
}

// errBGPDisabled answers the BGP calls of a node that runs without BGP.
var errBGPDisabled = status.Error(codes.FailedPrecondition,
	"BGP is disabled on this node (route-agent --bgp-config is empty; Helm: bgp.enabled=false): it has no sessions, advertises nothing and learns no routes")

// ListBGPPeers implements apiv1.AgentServer.
func (h *Handlers) ListBGPPeers(ctx context.Context, _ *apiv1.ListBGPPeersRequest) (*apiv1.ListBGPPeersResponse, error) {
	if h.Speaker == nil {
		return nil, errBGPDisabled
	}
	peers, err := h.Speaker.Peers(ctx)
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

// ListBGPRoutes implements apiv1.AgentServer.
func (h *Handlers) ListBGPRoutes(ctx context.Context, r *apiv1.ListBGPRoutesRequest) (*apiv1.ListBGPRoutesResponse, error) {
	if h.Speaker == nil {
		return nil, errBGPDisabled
	}
	var peer netip.Addr
	if r.GetPeerAddress() != "" {
		var err error
		if peer, err = netip.ParseAddr(r.GetPeerAddress()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "peer address %q: %v", r.GetPeerAddress(), err)
		}
	}
	routes, err := h.Speaker.Routes(ctx, r.GetDirection() == apiv1.ListBGPRoutesRequest_ADVERTISED, peer)
	if err != nil {
		return nil, err
	}
	received := r.GetDirection() == apiv1.ListBGPRoutesRequest_RECEIVED
	var views map[netip.Prefix][]routing.RouteView
	var own []netip.Prefix
	if self := h.Engine.Snapshot().Self; self != nil {
		own = self.PodCIDRs
	}
	if received {
		views = map[netip.Prefix][]routing.RouteView{}
		for _, v := range h.Routing.Routes() {
			views[v.Prefix] = append(views[v.Prefix], v)
		}
	}
	resp := &apiv1.ListBGPRoutesResponse{}
	for _, rt := range routes {
		br := &apiv1.BGPRoute{
			PeerAddress: rt.PeerAddress, Family: rt.Family, Prefix: rt.Prefix.String(),
			NextHop: rt.NextHop, AsPath: rt.ASPath, Communities: rt.Communities,
			LargeCommunities: rt.LargeCommunities, LocalPref: rt.LocalPref, SinceUnixMs: unixMs(rt.Since),
		}
		if received {
			br.Kernel = kernelState(rt, views[rt.Prefix.Masked()], own)
		}
		resp.Routes = append(resp.Routes, br)
	}
	return resp, nil
}

// kernelState says what became of a received path in the kernel.
func kernelState(rt bgp.RouteStatus, views []routing.RouteView, own []netip.Prefix) string {
	if slices.Contains(own, rt.Prefix.Masked()) {
		return "not installed: this node's own pod CIDR"
	}
	for _, v := range views {
		switch {
		case v.Kind == routing.KindDirect, v.Kind == routing.KindTunnel:
			return "not installed: the " + string(v.Kind) + " route to " + v.For + " wins"
		case v.For == routing.KeptUntilSettled:
			return "pending: an earlier run's route is kept until BGP settles"
		case v.For != rt.PeerAddress:
			return "not best: " + v.For + "'s path is"
		case v.Reason != "":
			return v.State + ": " + v.Reason
		default:
			return v.State
		}
	}
	return "not best: another path won"
}

// ListRoutes implements apiv1.AgentServer.
func (h *Handlers) ListRoutes(context.Context, *apiv1.ListRoutesRequest) (*apiv1.ListRoutesResponse, error) {
	resp := &apiv1.ListRoutesResponse{}
	for _, v := range h.Routing.Routes() {
		r := &apiv1.Route{Prefix: v.Prefix.String(), Device: v.Device, Kind: string(v.Kind), For: v.For,
			State: v.State, Reason: v.Reason, SinceUnixMs: unixMs(v.Since)}
		if v.NextHop.IsValid() {
			r.NextHop = v.NextHop.String()
		}
		resp.Routes = append(resp.Routes, r)
	}
	return resp, nil
}

func (h *Handlers) routingStatus() *apiv1.RoutingStatus {
	o := h.Routing.Options()
	st := &apiv1.RoutingStatus{Mode: "native", AutoDirectNodeRoutes: o.AutoDirectNodeRoutes,
		InstallDefaultRoute: o.InstallDefaultRoute, Heals: h.Routing.Stats().Heals}
	if t := o.Tunnel; t != nil {
		st.Mode, st.TunnelProtocol, st.TunnelDevice = "tunnel", string(t.Protocol), t.Protocol.DeviceName()
		st.TunnelPort = uint32(cmp.Or(t.Port, t.Protocol.DefaultPort()))
	}
	if mtu, _ := h.Routing.MTU(); mtu > 0 {
		st.PodMtu = uint32(mtu)
	}
	counts := map[[2]string]uint32{}
	var order [][2]string
	for _, v := range h.Routing.Routes() {
		k := [2]string{string(v.Kind), v.State}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	slices.SortFunc(order, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	for _, k := range order {
		st.Counts = append(st.Counts, &apiv1.RouteCount{Kind: k[0], State: k[1], Count: counts[k]})
	}
	return st
}
