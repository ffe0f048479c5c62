package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	apiv1 "routeagent.io/route-agent/api/v1"
	"routeagent.io/route-agent/version"
)

// peerRow is the JSON form of one `routectl bgp peers` row; the field names
// are part of the CLI's contract.
type peerRow struct {
	LocalAS       uint32 `json:"localAS"`
	PeerAS        uint32 `json:"peerAS"`
	PeerAddress   string `json:"peerAddress"`
	PeerPort      uint32 `json:"peerPort"`
	SessionState  string `json:"sessionState"`
	UptimeSeconds int64  `json:"uptimeSeconds"`
	Family        string `json:"family"`
	Received      uint64 `json:"received"`
	Advertised    uint64 `json:"advertised"`
}

func printPeers(w io.Writer, format string, peers []*apiv1.BGPPeerFamily) error {
	rows := make([]peerRow, 0, len(peers))
	for _, p := range peers {
		rows = append(rows, peerRow{
			LocalAS: p.GetLocalAs(), PeerAS: p.GetPeerAs(),
			PeerAddress: p.GetPeerAddress(), PeerPort: p.GetPeerPort(),
			SessionState: p.GetSessionState(), UptimeSeconds: p.GetUptimeSeconds(),
			Family: p.GetFamily(), Received: p.GetReceived(), Advertised: p.GetAdvertised(),
		})
	}
	if format == "json" {
		return writeJSON(w, rows)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No BGP peers selected for this node (see `routectl status`).")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "Local AS\tPeer AS\tPeer Address\tSession\tUptime\tFamily\tReceived\tAdvertised")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%d\t%d\n", r.LocalAS, r.PeerAS, hostPort(r.PeerAddress, r.PeerPort),
			r.SessionState, time.Duration(r.UptimeSeconds)*time.Second, r.Family, r.Received, r.Advertised)
	}
	return tw.Flush()
}

// routeRow is the JSON form of one `routectl bgp routes` row.
type routeRow struct {
	PeerAddress string   `json:"peerAddress"`
	Family      string   `json:"family"`
	Prefix      string   `json:"prefix"`
	NextHop     string   `json:"nextHop"`
	ASPath      []uint32 `json:"asPath"`
	// Communities as "AA:NN" and large communities as "A:B:C".
	Communities      []string `json:"communities"`
	LargeCommunities []string `json:"largeCommunities"`
	// LocalPref is null when the path carries none (eBGP).
	LocalPref *uint32 `json:"localPref"`
	// Since is when the path was received or originated, and AgeSeconds
	// how long ago; both are left out when the agent does not know.
	Since      *time.Time `json:"since,omitempty"`
	AgeSeconds *int64     `json:"ageSeconds,omitempty"`
	// Kernel is set for received paths only.
	Kernel string `json:"kernel,omitempty"`
}

func printRoutes(w io.Writer, format string, routes []*apiv1.BGPRoute) error {
	t := now()
	rows := make([]routeRow, 0, len(routes))
	for _, r := range routes {
		path := r.GetAsPath()
		if path == nil {
			path = []uint32{}
		}
		row := routeRow{PeerAddress: r.GetPeerAddress(), Family: r.GetFamily(),
			Prefix: r.GetPrefix(), NextHop: r.GetNextHop(), ASPath: path,
			Communities: nonNil(r.GetCommunities()), LargeCommunities: nonNil(r.GetLargeCommunities()),
			LocalPref: r.LocalPref, Since: timeOrNil(r.GetSinceUnixMs()), Kernel: r.GetKernel()}
		if row.Since != nil {
			age := int64(max(t.Sub(*row.Since), 0) / time.Second)
			row.AgeSeconds = &age
		}
		rows = append(rows, row)
	}
	if format == "json" {
		return writeJSON(w, rows)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No paths.")
		return err
	}
	withKernel := false
	for _, r := range rows {
		withKernel = withKernel || r.Kernel != ""
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	header := "Peer\tFamily\tPrefix\tNext Hop\tAS Path\tLocal Pref\tCommunities\tAge"
	if withKernel {
		header += "\tKernel"
	}
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		path := make([]string, len(r.ASPath))
		for i, as := range r.ASPath {
			path[i] = strconv.FormatUint(uint64(as), 10)
		}
		localPref, age := "-", "-"
		if r.LocalPref != nil {
			localPref = strconv.FormatUint(uint64(*r.LocalPref), 10)
		}
		if r.AgeSeconds != nil {
			age = (time.Duration(*r.AgeSeconds) * time.Second).String()
		}
		communities := slices.Concat(r.Communities, r.LargeCommunities)
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", r.PeerAddress, r.Family, r.Prefix, r.NextHop,
			orDash(strings.Join(path, " ")), localPref, orDash(strings.Join(communities, " ")), age)
		if withKernel {
			line += "\t" + r.Kernel
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// kernelRouteRow is the JSON form of one `routectl routes` row.
type kernelRouteRow struct {
	Prefix  string    `json:"prefix"`
	NextHop string    `json:"nextHop"`
	Device  string    `json:"device"`
	Kind    string    `json:"kind"`
	For     string    `json:"for"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Since   time.Time `json:"since"`
}

func printKernelRoutes(w io.Writer, format string, routes []*apiv1.Route) error {
	rows := make([]kernelRouteRow, 0, len(routes))
	for _, r := range routes {
		rows = append(rows, kernelRouteRow{Prefix: r.GetPrefix(), NextHop: r.GetNextHop(), Device: r.GetDevice(),
			Kind: r.GetKind(), For: r.GetFor(), State: r.GetState(), Reason: r.GetReason(),
			Since: time.UnixMilli(r.GetSinceUnixMs()).UTC()})
	}
	if format == "json" {
		return writeJSON(w, rows)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No routes: no other node's pod CIDR is on-link and no peer sent a prefix (see `routectl status`).")
		return err
	}
	t := now()
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "Prefix\tNext Hop\tDevice\tKind\tFor\tState\tSince")
	for _, r := range rows {
		state := r.State
		if r.Reason != "" {
			state += ": " + r.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Prefix, orDash(r.NextHop), orDash(r.Device), r.Kind, r.For, state,
			t.Sub(r.Since).Truncate(time.Second).String()+" ago")
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// hostPort prints 10.0.0.1:179 and [fd00::1]:179.
func hostPort(addr string, port uint32) string {
	if a, err := netip.ParseAddr(addr); err == nil {
		addr = a.String()
	}
	return net.JoinHostPort(addr, strconv.FormatUint(uint64(port), 10))
}

// now is time.Now, replaced in tests.
var now = time.Now

func printStatus(w io.Writer, format string, s *apiv1.StatusResponse) error {
	if format == "json" {
		return writeJSON(w, statusJSON(s))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	node := s.GetNodeName()
	if !s.GetNodeKnown() {
		node += " (Node object not seen yet)"
	}
	fmt.Fprintf(tw, "Node:\t%s\n", node)
	fmt.Fprintf(tw, "Node IPs:\t%s\n", orNone(s.GetNodeIps()))
	fmt.Fprintf(tw, "Pod CIDRs:\t%s\n", orNone(s.GetPodCidrs()))
	if s.GetReady() {
		fmt.Fprintf(tw, "Ready:\tyes\n")
	} else {
		fmt.Fprintf(tw, "Ready:\tno\n")
		for _, r := range s.GetNotReadyReasons() {
			fmt.Fprintf(tw, "\t  %s\n", r)
		}
	}
	// The agent leaves the bgp-config out when it runs without BGP.
	c := s.GetBgpConfig()
	switch {
	case c == nil:
		fmt.Fprintf(tw, "BGP:\tdisabled (--bgp-config is empty): no sessions, no advertised paths, no learned routes\n")
	case !c.GetPresent():
		fmt.Fprintf(tw, "BGP config:\t%s not found: no peers\n", c.GetSource())
	case c.GetAppliedResourceVersion() == "":
		fmt.Fprintf(tw, "BGP config:\t%s: no valid version yet\n", c.GetSource())
	default:
		fmt.Fprintf(tw, "BGP config:\t%s resourceVersion %s in force\n", c.GetSource(), c.GetAppliedResourceVersion())
	}
	if c.GetError() != "" {
		kept := "the version above stays in force"
		if c.GetAppliedResourceVersion() == "" {
			kept = "no configuration is in force"
		}
		fmt.Fprintf(tw, "BGP config error:\tresourceVersion %s rejected, %s:\n", c.GetErrorResourceVersion(), kept)
		for _, line := range strings.Split(c.GetError(), "\n") {
			fmt.Fprintf(tw, "\t  %s\n", line)
		}
	}
	switch {
	case c == nil:
	case s.GetBgpAsn() != 0:
		fmt.Fprintf(tw, "BGP speaker:\tAS %d, router-id %s\n", s.GetBgpAsn(), s.GetBgpRouterId())
	default:
		fmt.Fprintf(tw, "BGP speaker:\toff\n")
	}
	if rs := s.GetRouting(); rs != nil {
		fmt.Fprintf(tw, "Routing:\t%s, autoDirectNodeRoutes %s, learned default route %s\n", rs.GetMode(),
			onOff(rs.GetAutoDirectNodeRoutes()), map[bool]string{true: "installed", false: "refused"}[rs.GetInstallDefaultRoute()])
		if rs.GetMode() == "tunnel" {
			mtu := "not known yet"
			if rs.GetPodMtu() > 0 {
				mtu = strconv.Itoa(int(rs.GetPodMtu()))
			}
			fmt.Fprintf(tw, "Tunnel:\t%s on UDP %d, device %s, pod MTU %s\n", rs.GetTunnelProtocol(), rs.GetTunnelPort(), rs.GetTunnelDevice(), mtu)
		}
		var counts []string
		for _, c := range rs.GetCounts() {
			counts = append(counts, fmt.Sprintf("%d %s %s", c.GetCount(), c.GetKind(), c.GetState()))
		}
		if len(counts) == 0 {
			counts = []string{"none"}
		}
		fmt.Fprintf(tw, "Routes:\t%s; %d healed\n", strings.Join(counts, ", "), rs.GetHeals())
	}
	if m := s.GetMasquerade(); m.GetEnabled() {
		fmt.Fprintf(tw, "Masquerading:\t%s\n", m.GetSummary())
		if c := s.GetIpMasqConfig(); c.GetSource() != "" {
			switch {
			case !c.GetPresent():
				fmt.Fprintf(tw, "ip-masq-agent:\t%s not found: defaults in force\n", c.GetSource())
			case c.GetAppliedResourceVersion() == "":
				fmt.Fprintf(tw, "ip-masq-agent:\t%s: no valid version yet, defaults in force\n", c.GetSource())
			default:
				fmt.Fprintf(tw, "ip-masq-agent:\t%s resourceVersion %s in force\n", c.GetSource(), c.GetAppliedResourceVersion())
			}
			if c.GetError() != "" {
				fmt.Fprintf(tw, "ip-masq-agent error:\tresourceVersion %s rejected:\n", c.GetErrorResourceVersion())
				for _, line := range strings.Split(c.GetError(), "\n") {
					fmt.Fprintf(tw, "\t  %s\n", line)
				}
			}
		}
	} else {
		fmt.Fprintf(tw, "Masquerading:\toff\n")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.GetParts()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "Part\tState\tLast Success\tRuns\tFailures\tLast Error")
	t := now()
	for _, p := range s.GetParts() {
		lastErr := p.GetLastError()
		if lastErr != "" {
			lastErr = fmt.Sprintf("%s (failing for %s, retry in %s)", firstLine(lastErr),
				ago(t, p.GetFailingSinceUnixMs()), until(t, p.GetNextRetryUnixMs()))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", p.GetName(), p.GetState(), agoOrNever(t, p.GetLastSuccessUnixMs()),
			p.GetRuns(), p.GetFailures(), lastErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range s.GetParts() {
		for _, warn := range p.GetWarnings() {
			fmt.Fprintf(w, "Warning (%s): %s\n", p.GetName(), warn)
		}
		if e := p.GetLastError(); strings.Contains(e, "\n") {
			fmt.Fprintf(w, "Error (%s):\n", p.GetName())
			for _, line := range strings.Split(e, "\n") {
				fmt.Fprintf(w, "  %s\n", line)
			}
		}
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func firstLine(s string) string {
	if first, _, ok := strings.Cut(s, "\n"); ok {
		return first + " ..."
	}
	return s
}

func ago(t time.Time, ms int64) string {
	return t.Sub(time.UnixMilli(ms)).Truncate(time.Second).String()
}

func agoOrNever(t time.Time, ms int64) string {
	if ms == 0 {
		return "never"
	}
	return ago(t, ms) + " ago"
}

func until(t time.Time, ms int64) string {
	d := time.UnixMilli(ms).Sub(t).Truncate(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String()
}

type statusOut struct {
	NodeName        string   `json:"nodeName"`
	NodeKnown       bool     `json:"nodeKnown"`
	NodeIPs         []string `json:"nodeIPs"`
	PodCIDRs        []string `json:"podCIDRs"`
	Ready           bool     `json:"ready"`
	NotReadyReasons []string `json:"notReadyReasons"`
	// BGPEnabled is false, and BGPConfig left out, on a node without BGP.
	BGPEnabled  bool        `json:"bgpEnabled"`
	BGPConfig   *configOut  `json:"bgpConfig,omitempty"`
	BGPASN      uint32      `json:"bgpASN"`
	BGPRouterID string      `json:"bgpRouterID"`
	Routing     *routingOut `json:"routing,omitempty"`
	Parts       []partOut   `json:"parts"`
}

type routingOut struct {
	Mode                 string          `json:"mode"`
	TunnelProtocol       string          `json:"tunnelProtocol,omitempty"`
	TunnelPort           uint32          `json:"tunnelPort,omitempty"`
	TunnelDevice         string          `json:"tunnelDevice,omitempty"`
	PodMTU               uint32          `json:"podMTU,omitempty"`
	AutoDirectNodeRoutes bool            `json:"autoDirectNodeRoutes"`
	InstallDefaultRoute  bool            `json:"installDefaultRoute"`
	Counts               []routeCountOut `json:"counts"`
	Heals                uint64          `json:"heals"`
}

type routeCountOut struct {
	Kind  string `json:"kind"`
	State string `json:"state"`
	Count uint32 `json:"count"`
}

type configOut struct {
	Source                 string `json:"source"`
	Present                bool   `json:"present"`
	AppliedResourceVersion string `json:"appliedResourceVersion"`
	Error                  string `json:"error,omitempty"`
	ErrorResourceVersion   string `json:"errorResourceVersion,omitempty"`
}

// partOut is one part in `routectl status -o json`; times are RFC 3339,
// omitted when never.
type partOut struct {
	Name           string     `json:"name"`
	State          string     `json:"state"`
	Runs           uint64     `json:"runs"`
	Failures       uint64     `json:"failures"`
	LastRun        *time.Time `json:"lastRun,omitempty"`
	LastSuccess    *time.Time `json:"lastSuccess,omitempty"`
	LastDurationMs int64      `json:"lastDurationMs"`
	LastError      string     `json:"lastError,omitempty"`
	FailingSince   *time.Time `json:"failingSince,omitempty"`
	NextRetry      *time.Time `json:"nextRetry,omitempty"`
	Warnings       []string   `json:"warnings"`
}

func timeOrNil(ms int64) *time.Time {
	if ms == 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

func statusJSON(s *apiv1.StatusResponse) statusOut {
	c := s.GetBgpConfig()
	out := statusOut{
		NodeName: s.GetNodeName(), NodeKnown: s.GetNodeKnown(),
		NodeIPs: nonNil(s.GetNodeIps()), PodCIDRs: nonNil(s.GetPodCidrs()),
		Ready: s.GetReady(), NotReadyReasons: nonNil(s.GetNotReadyReasons()),
		BGPEnabled:  c != nil,
		BGPASN:      s.GetBgpAsn(),
		BGPRouterID: s.GetBgpRouterId(),
		Parts:       []partOut{},
	}
	if c != nil {
		out.BGPConfig = &configOut{
			Source: c.GetSource(), Present: c.GetPresent(), AppliedResourceVersion: c.GetAppliedResourceVersion(),
			Error: c.GetError(), ErrorResourceVersion: c.GetErrorResourceVersion(),
		}
	}
	if rs := s.GetRouting(); rs != nil {
		out.Routing = &routingOut{Mode: rs.GetMode(), TunnelProtocol: rs.GetTunnelProtocol(), TunnelPort: rs.GetTunnelPort(),
			TunnelDevice: rs.GetTunnelDevice(), PodMTU: rs.GetPodMtu(), AutoDirectNodeRoutes: rs.GetAutoDirectNodeRoutes(),
			InstallDefaultRoute: rs.GetInstallDefaultRoute(), Heals: rs.GetHeals(), Counts: []routeCountOut{}}
		for _, c := range rs.GetCounts() {
			out.Routing.Counts = append(out.Routing.Counts, routeCountOut{Kind: c.GetKind(), State: c.GetState(), Count: c.GetCount()})
		}
	}
	for _, p := range s.GetParts() {
		out.Parts = append(out.Parts, partOut{
			Name: p.GetName(), State: p.GetState(), Runs: p.GetRuns(), Failures: p.GetFailures(),
			LastRun: timeOrNil(p.GetLastRunUnixMs()), LastSuccess: timeOrNil(p.GetLastSuccessUnixMs()),
			LastDurationMs: p.GetLastDurationMs(), LastError: p.GetLastError(),
			FailingSince: timeOrNil(p.GetFailingSinceUnixMs()), NextRetry: timeOrNil(p.GetNextRetryUnixMs()),
			Warnings: nonNil(p.GetWarnings()),
		})
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// nonNil makes JSON print [] rather than null, which is kinder to jq.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

type ipMasqRow struct {
	Prefix  string   `json:"prefix"`
	Reasons []string `json:"reasons"`
}

func printIPMasq(w io.Writer, format string, r *apiv1.ListIPMasqResponse) error {
	rows := make([]ipMasqRow, 0, len(r.GetEntries()))
	for _, e := range r.GetEntries() {
		row := ipMasqRow{Prefix: e.GetPrefix(), Reasons: []string{}}
		for _, why := range e.GetReasons() {
			s := why.GetKind()
			if why.GetDetail() != "" {
				s += " " + why.GetDetail()
			}
			row.Reasons = append(row.Reasons, s)
		}
		rows = append(rows, row)
	}
	if format == "json" {
		return writeJSON(w, struct {
			Entries              []ipMasqRow `json:"entries"`
			NonMasqueradeSources []string    `json:"nonMasqueradeSources"`
		}{rows, nonNil(r.GetNonMasqueradeSources())})
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "IP PREFIX/ADDRESS\tWHY")
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", row.Prefix, strings.Join(row.Reasons, ", "))
	}
	for _, src := range r.GetNonMasqueradeSources() {
		fmt.Fprintf(tw, "from %s\tsource never masqueraded (NonMasqueradeSrcCIDRs)\n", src)
	}
	return tw.Flush()
}

type natRow struct {
	Protocol string `json:"protocol"`
	Pod      string `json:"pod"`
	NAT      string `json:"nat"`
	Remote   string `json:"remote"`
	IdleMs   int64  `json:"idleMs"`
}

func printNAT(w io.Writer, format string, r *apiv1.ListNATResponse) error {
	rows := make([]natRow, 0, len(r.GetEntries()))
	for _, e := range r.GetEntries() {
		rows = append(rows, natRow{Protocol: e.GetProtocol(), Pod: e.GetPod(), NAT: e.GetNat(), Remote: e.GetRemote(), IdleMs: e.GetIdleMs()})
	}
	if format == "json" {
		return writeJSON(w, rows)
	}
	if !r.GetSupported() {
		_, err := fmt.Fprintln(w, "The iptables datapath keeps no NAT table of its own: see `conntrack -L` on the node.")
		return err
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No masqueraded flows.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "Proto\tPod\tNode (NAT)\tRemote\tIdle")
	for _, x := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.Protocol, x.Pod, x.NAT, x.Remote, (time.Duration(x.IdleMs) * time.Millisecond).Truncate(time.Second))
	}
	return tw.Flush()
}

type serviceRow struct {
	Namespace  string   `json:"namespace"`
	Name       string   `json:"name"`
	Addresses  []string `json:"addresses"`
	Pool       string   `json:"pool"`
	Advertised bool     `json:"advertised"`
	Reason     string   `json:"reason"`
}

func printServices(w io.Writer, format string, svcs []*apiv1.LBService) error {
	rows := make([]serviceRow, 0, len(svcs))
	for _, s := range svcs {
		rows = append(rows, serviceRow{Namespace: s.GetNamespace(), Name: s.GetName(), Addresses: nonNil(s.GetAddresses()),
			Pool: s.GetPool(), Advertised: s.GetAdvertised(), Reason: s.GetReason()})
	}
	if format == "json" {
		return writeJSON(w, rows)
	}
	if len(rows) == 0 {
		_, err := fmt.Fprintln(w, "No LoadBalancer Services.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "Service\tAddresses\tPool\tAdvertised\tWhy not")
	for _, r := range rows {
		adv := "no"
		if r.Advertised {
			adv = "yes"
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%s\t%s\n", r.Namespace, r.Name, orNone(r.Addresses), orDash(r.Pool), adv, orDash(r.Reason))
	}
	return tw.Flush()
}

// versionOut is one side of `routectl version -o json`.
type versionOut struct {
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
}

// printVersion prints the server's version, or in JSON both; the table's
// client line is printed before the agent is asked. server is nil when the
// agent did not answer, which JSON shows by leaving it out.
func printVersion(w io.Writer, format string, client versionOut, server *versionOut) error {
	if format == "json" {
		return writeJSON(w, struct {
			Client versionOut  `json:"client"`
			Server *versionOut `json:"server,omitempty"`
		}{client, server})
	}
	if server == nil {
		return nil
	}
	v := version.Format(server.Version, server.Commit)
	if server.Version == "" {
		v = "unknown (this route-agent does not report its version)"
	}
	_, err := fmt.Fprintf(w, "Server Version: %s\n", v)
	return err
}
