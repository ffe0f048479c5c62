package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"routeagent.io/route-agent/secret"
)

// This file wraps GoBGP's Any-typed API once, so the rest of the package
// speaks in netip values.

func familyOf(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// families returns the unicast families the session with p carries: that
// of its address and, with DualStack, the other one too.
func (p Peer) families() []*api.Family {
	fams := []*api.Family{familyOf(p.Address)}
	if p.DualStack {
		other := netip.IPv6Unspecified()
		if p.Address.Is6() {
			other = netip.IPv4Unspecified()
		}
		fams = append(fams, familyOf(other))
	}
	return fams
}

// familyName prints a family as cilium-dbg does ("ipv4/unicast").
func familyName(f *api.Family) string {
	afi := map[api.Family_Afi]string{api.Family_AFI_IP: "ipv4", api.Family_AFI_IP6: "ipv6"}[f.GetAfi()]
	if afi == "" {
		afi = f.GetAfi().String()
	}
	if f.GetSafi() == api.Family_SAFI_UNICAST {
		return afi + "/unicast"
	}
	return afi + "/" + f.GetSafi().String()
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil { // only fails for unregistered message types, a programming error
		panic(fmt.Sprintf("wrapping %T: %v", m, err))
	}
	return a
}

// apiPath builds the GoBGP path that advertises prefix with nexthop, origin IGP.
func apiPath(p Path) *api.Path {
	nlri := apiNLRI(p.Prefix)
	return &api.Path{Family: familyOf(p.Prefix.Addr()), Nlri: nlri, Pattrs: apiAttrs(p, nlri)}
}

func apiNLRI(prefix netip.Prefix) *anypb.Any {
	return mustAny(&api.IPAddressPrefix{Prefix: prefix.Addr().String(), PrefixLen: uint32(prefix.Bits())})
}

// apiAttrs are p's path attributes. Only an IPv6 path's depend on its
// prefix (nlri), which MP_REACH_NLRI carries.
func apiAttrs(p Path, nlri *anypb.Any) []*anypb.Any {
	attrs := []*anypb.Any{mustAny(&api.OriginAttribute{Origin: 0})}
	if p.Prefix.Addr().Is4() && p.NextHop.Is4() {
		attrs = append(attrs, mustAny(&api.NextHopAttribute{NextHop: p.NextHop.String()}))
	} else {
		attrs = append(attrs, mustAny(&api.MpReachNLRIAttribute{Family: familyOf(p.Prefix.Addr()), NextHops: []string{p.NextHop.String()}, Nlris: []*anypb.Any{nlri}}))
	}
	if p.Attrs.LocalPref != 0 {
		attrs = append(attrs, mustAny(&api.LocalPrefAttribute{LocalPref: p.Attrs.LocalPref}))
	}
	if c := p.Attrs.Communities.Values(); len(c) > 0 {
		attrs = append(attrs, mustAny(&api.CommunitiesAttribute{Communities: c}))
	}
	return attrs
}

// apiPaths is apiPath for many paths, marking them withdrawals when
// withdraw is set. IPv4 paths with the same next hop and attributes share
// one attribute list: 10,000 LoadBalancer addresses of a pool differ only
// in their prefix, and marshalling their attributes once each was a good
// part of handing them to GoBGP.
func apiPaths(paths []Path, withdraw bool) []*api.Path {
	out := make([]*api.Path, 0, len(paths))
	shared := map[Path][]*anypb.Any{}
	for _, p := range paths {
		nlri := apiNLRI(p.Prefix)
		var attrs []*anypb.Any
		if !p.Prefix.Addr().Is4() || !p.NextHop.Is4() {
			attrs = apiAttrs(p, nlri)
		} else if key := (Path{NextHop: p.NextHop, Attrs: p.Attrs}); shared[key] != nil {
			attrs = shared[key]
		} else {
			attrs = apiAttrs(p, nlri)
			shared[key] = attrs
		}
		out = append(out, &api.Path{Family: familyOf(p.Prefix.Addr()), Nlri: nlri, Pattrs: attrs, IsWithdraw: withdraw})
	}
	return out
}

// Graceful restart (RFC 4724): a peer keeps this node's routes, marked
// stale, for restartTime after the session drops without a NOTIFICATION (a
// crash, kill -9, an OOM kill), since the node's kernel routes, and so its
// forwarding, survive the agent. A planned stop sends Cease and the routes
// go at once. deferralTime bounds how long a restarted speaker holds its
// own UPDATEs back waiting for its peers' End-of-RIB.
const (
	restartTime  = 120
	deferralTime = 30
)

// apiPeer builds GoBGP's peer. restarting sets the Restart State and
// Forwarding State bits: only right after this node's agent really
// restarted with its routes in place.
func apiPeer(p Peer, restarting bool) *api.Peer {
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password.Reveal(),
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      uint64(connectRetry.Seconds()),
			HoldTime:          uint64(p.HoldTime.Seconds()),
			KeepaliveInterval: uint64(p.KeepaliveTime.Seconds()),
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		GracefulRestart: &api.GracefulRestart{
			Enabled: true, RestartTime: restartTime, DeferralTime: deferralTime, LocalRestarting: restarting,
		},
	}
	// One AFI/SAFI each: GoBGP offers them all in its OPEN (multiprotocol
	// capabilities, RFC 4760) and the session carries those the peer
	// offers too, so an IPv4-only router simply gets IPv4.
	for _, f := range p.families() {
		ap.AfiSafis = append(ap.AfiSafis, &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: f, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		})
	}
	if p.SourceAddress.IsValid() {
		ap.Transport.LocalAddress = p.SourceAddress.String()
	}
	if p.EBGPMultihop {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	return ap
}

// negotiatedFamilies returns the names of the families an established
// session carries: those both ends offered. GoBGP records a peer that
// offered no multiprotocol capability at all as offering IPv4 unicast, as
// RFC 4760 has it. It returns nil when the session is not established.
func negotiatedFamilies(p *api.Peer) map[string]bool {
	if p.GetState().GetSessionState() != api.PeerState_ESTABLISHED {
		return nil
	}
	remote := map[string]bool{}
	for _, c := range p.GetState().GetRemoteCap() {
		m, err := c.UnmarshalNew()
		if err != nil {
			continue
		}
		if mp, ok := m.(*api.MultiProtocolCapability); ok {
			remote[familyName(mp.GetFamily())] = true
		}
	}
	out := map[string]bool{}
	for _, af := range p.GetAfiSafis() {
		if name := familyName(af.GetConfig().GetFamily()); remote[name] {
			out[name] = true
		}
	}
	return out
}

// nextHopPolicy sets the next hop of one family's paths sent to one peer
// (a peer's ipv4-next-hop or ipv6-next-hop). GoBGP keeps one path per
// prefix for every peer, so a per-peer next hop is an export policy
// statement, as a route-map is on FRR.
type nextHopPolicy struct {
	peer    netip.Addr
	ipv6    bool
	nextHop netip.Addr
}

// nextHopPolicies lists the policies the peers ask for.
func nextHopPolicies(peers []Peer) map[nextHopPolicy]bool {
	out := map[nextHopPolicy]bool{}
	for _, p := range peers {
		for _, v6 := range []bool{false, true} {
			nh := p.IPv4NextHop
			if v6 {
				nh = p.IPv6NextHop
			}
			if nh.IsValid() && p.carries(v6) {
				out[nextHopPolicy{peer: p.Address, ipv6: v6, nextHop: nh}] = true
			}
		}
	}
	return out
}

// name holds everything the policy does, so an existing policy of that
// name is the right one: a changed next hop is a new policy.
func (n nextHopPolicy) name() string {
	fam := netip.IPv4Unspecified()
	if n.ipv6 {
		fam = netip.IPv6Unspecified()
	}
	return fmt.Sprintf("route-agent-nexthop-%s-%s-%s", n.peer, ipFamily(fam), n.nextHop)
}

// neighborSet names the defined set holding only peer.
func neighborSet(peer netip.Addr) string { return "route-agent-peer-" + peer.String() }

func (n nextHopPolicy) apiNeighborSet() *api.DefinedSet {
	return &api.DefinedSet{
		DefinedType: api.DefinedType_NEIGHBOR,
		Name:        neighborSet(n.peer),
		List:        []string{netip.PrefixFrom(n.peer, n.peer.BitLen()).String()},
	}
}

// apiPolicy accepts the node's own paths of the family for the peer with
// the next hop set; every other path goes on to the plain export policy.
func (n nextHopPolicy) apiPolicy() *api.Policy {
	fam := familyOf(netip.IPv4Unspecified())
	if n.ipv6 {
		fam = familyOf(netip.IPv6Unspecified())
	}
	return &api.Policy{Name: n.name(), Statements: []*api.Statement{{
		Name: n.name(),
		Conditions: &api.Conditions{
			RouteType:   api.Conditions_ROUTE_TYPE_LOCAL,
			NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: neighborSet(n.peer)},
			AfiSafiIn:   []*api.Family{fam},
		},
		Actions: &api.Actions{
			RouteAction: api.RouteAction_ACCEPT,
			Nexthop:     &api.NexthopAction{Address: n.nextHop.String()},
		},
	}}}
}

// sessionStateName prints a session state as FRR and cilium-dbg do.
func sessionStateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// slogAdapter sends GoBGP's logs to slog. GoBGP logs a lot at debug level,
// so its level follows the agent's.
type slogAdapter struct {
	l *slog.Logger
	// secrets returns the passwords in use. GoBGP's fields are its own
	// types, which may carry a peer's configuration; any value whose text
	// holds a password is replaced.
	secrets func() []string
	// fatal is told when GoBGP reports a Fatal error.
	fatal func(error)
}

func (a slogAdapter) attrs(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f)+2)
	out = append(out, "component", "gobgp")
	secrets := a.secrets()
	for k, v := range f {
		if len(secrets) > 0 {
			text := fmt.Sprint(v)
			for _, s := range secrets {
				if s != "" && strings.Contains(text, s) {
					v = secret.Redacted
					break
				}
			}
		}
		out = append(out, k, v)
	}
	return out
}

func (a slogAdapter) Panic(msg string, f gobgplog.Fields) {
	a.l.Error(msg, a.attrs(f)...)
	panic(msg)
}

// Fatal is where GoBGP expects the process to end. Going on would leave
// the speaker in a state GoBGP itself calls impossible, so the agent is told
// to shut down (and exit non-zero, so the kubelet restarts it), and the
// calling goroutine parks for good rather than run past the Fatal.
func (a slogAdapter) Fatal(msg string, f gobgplog.Fields) {
	a.l.Error(msg, a.attrs(f)...)
	a.fatal(fmt.Errorf("bgp speaker: fatal: %s", msg))
	select {}
}

func (a slogAdapter) Error(msg string, f gobgplog.Fields) { a.l.Error(msg, a.attrs(f)...) }
func (a slogAdapter) Warn(msg string, f gobgplog.Fields)  { a.l.Warn(msg, a.attrs(f)...) }
func (a slogAdapter) Info(msg string, f gobgplog.Fields)  { a.l.Info(msg, a.attrs(f)...) }
func (a slogAdapter) Debug(msg string, f gobgplog.Fields) { a.l.Debug(msg, a.attrs(f)...) }
func (a slogAdapter) SetLevel(gobgplog.LogLevel)          {}
func (a slogAdapter) GetLevel() gobgplog.LogLevel {
	if a.l.Enabled(context.Background(), slog.LevelDebug) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
