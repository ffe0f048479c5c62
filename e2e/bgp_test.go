//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"routeagent.io/route-agent/e2e/lab"
)

const settle = 2 * time.Minute

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Every ToR holds every node's pod CIDR; on its own rack the next hop is
// the owning node.
func TestPodCIDRsAdvertisedToToRs(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	for _, r := range l.Routers {
		routes, err := r.Routes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range l.Nodes {
			nh, err := r.BestNextHop(ctx, n.PodCIDR.String())
			if err != nil {
				t.Fatal(err)
			}
			if nh == "" {
				t.Errorf("%s: no valid best path to %s of %s; table: %v", r.Name, n.PodCIDR, n.Name, routes)
				continue
			}
			if n.Router == r && nh != n.IP.String() {
				t.Errorf("%s: next hop of %s is %s, want the owning node %s (%s)", r.Name, n.PodCIDR, nh, n.Name, n.IP)
			}
		}
	}
}

// The metrics say what routectl says: every session up, one path
// advertised, the configuration loaded and not stale.
func TestMetrics(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	for _, n := range l.Nodes {
		peer := n.Router.Addr.String()
		err := metricsHave(ctx, l, n,
			fmt.Sprintf(`route_agent_bgp_session_up{peer="%s"} 1`, peer),
			fmt.Sprintf(`route_agent_bgp_advertised_paths{family="ipv4/unicast",peer="%s"} 1`, peer),
			`route_agent_config_loaded{configmap="kube-system/bgp-config"} 1`,
			`route_agent_config_stale{configmap="kube-system/bgp-config"} 0`,
			`route_agent_part_warnings{part="bgp"} 0`,
			`route_agent_part_failing{part="bgp"} 0`,
			`route_agent_ready 1`)
		if err != nil {
			t.Error(err)
		}
	}
}

// Every agent is ready: its probe says so, and routectl status shows each
// part applied.
func TestReadiness(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	for _, n := range l.Nodes {
		if code, body, err := l.Probe(ctx, n, "/healthz"); err != nil || code != 200 {
			t.Errorf("%s /healthz = %d %q, %v", n.Name, code, body, err)
		}
		err := lab.WaitFor(ctx, settle, n.Name+" ready", func() error {
			code, body, err := l.Probe(ctx, n, "/readyz")
			if err != nil {
				return err
			}
			if code != 200 || body != "ok\n" {
				return fmt.Errorf("/readyz = %d %q", code, body)
			}
			s, err := status(ctx, l, n)
			if err != nil {
				return err
			}
			if !s.Ready || len(s.NotReadyReasons) != 0 {
				return fmt.Errorf("routectl status: ready=%v %q", s.Ready, s.NotReadyReasons)
			}
			parts := map[string]string{}
			for _, p := range s.Parts {
				parts[p.Name] = p.State
				if p.LastSuccess == "" || p.LastError != "" {
					return fmt.Errorf("part %s: lastSuccess %q, lastError %q", p.Name, p.LastSuccess, p.LastError)
				}
			}
			if parts["bgp"] != "ok" {
				return fmt.Errorf("parts %v, want bgp ok", parts)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// An agent with nothing to do does nothing: no part reconciles more than
// its events and resync ask for.
func TestIdleAgentIsIdle(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	runs := func(n *lab.Node) map[string]uint64 {
		out, err := l.Routectl(ctx, n, "status", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Parts []struct {
				Name string `json:"name"`
				Runs uint64 `json:"runs"`
			} `json:"parts"`
		}
		if err := json.Unmarshal(out, &s); err != nil {
			t.Fatal(err)
		}
		m := map[string]uint64{}
		for _, p := range s.Parts {
			m[p.Name] = p.Runs
		}
		return m
	}
	for _, n := range l.Nodes {
		before := runs(n)
		time.Sleep(2 * time.Second)
		after := runs(n)
		for part, r := range after {
			if r-before[part] > 5 {
				t.Errorf("%s: part %s reconciled %d times in 2s while nothing changed", n.Name, part, r-before[part])
			}
		}
	}
}

// routectl bgp peers -o json says what FRR says about the same session.
func TestRoutectlAgreesWithFRR(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	for _, n := range l.Nodes {
		err := lab.WaitFor(ctx, settle, n.Name+" and "+n.Router.Name+" to agree", func() error {
			return compareWithFRR(ctx, l, n, n.Router)
		})
		if err != nil {
			t.Error(err)
		}
	}
}

func compareWithFRR(ctx context.Context, l *lab.Lab, n *lab.Node, r *lab.Router) error {
	rows, err := l.Peers(ctx, n)
	if err != nil {
		return err
	}
	var row *lab.PeerRow
	for i := range rows {
		if rows[i].PeerAddress == r.Addr.String() && rows[i].Family == "ipv4/unicast" {
			row = &rows[i]
		}
	}
	if row == nil {
		return fmt.Errorf("routectl on %s has no ipv4/unicast row for %s: %+v", n.Name, r.Addr, rows)
	}
	nbs, err := r.Neighbors(ctx)
	if err != nil {
		return err
	}
	nb, ok := nbs[n.IP.String()]
	if !ok {
		return fmt.Errorf("%s has no neighbor %s", r.Name, n.IP)
	}
	af := nb.AddressFamily["ipv4Unicast"]
	var diffs []string
	check := func(what string, agent, frr any) {
		if fmt.Sprint(agent) != fmt.Sprint(frr) {
			diffs = append(diffs, fmt.Sprintf("%s: routectl %v, FRR %v", what, agent, frr))
		}
	}
	check("session", row.SessionState, strings.ToLower(nb.BGPState))
	check("local AS (FRR's remote AS)", row.LocalAS, nb.RemoteAS)
	check("peer AS (FRR's local AS)", row.PeerAS, nb.LocalAS)
	check("port", row.PeerPort, 179)
	check("advertised (FRR's accepted)", row.Advertised, af.AcceptedPrefixCounter)
	check("received (FRR's sent)", row.Received, af.SentPrefixCounter)
	if row.Advertised == 0 {
		diffs = append(diffs, "the agent advertises nothing")
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s vs %s: %s", n.Name, r.Name, strings.Join(diffs, "; "))
	}
	return nil
}

type statusJSON struct {
	Ready           bool     `json:"ready"`
	NotReadyReasons []string `json:"notReadyReasons"`
	BGPASN          uint32   `json:"bgpASN"`
	BGPRouterID     string   `json:"bgpRouterID"`
	BGPConfig       struct {
		AppliedResourceVersion string `json:"appliedResourceVersion"`
		Error                  string `json:"error"`
		ErrorResourceVersion   string `json:"errorResourceVersion"`
	} `json:"bgpConfig"`
	Routing struct {
		Mode         string `json:"mode"`
		Heals        uint64 `json:"heals"`
		TunnelDevice string `json:"tunnelDevice"`
		TunnelPort   uint32 `json:"tunnelPort"`
		PodMTU       uint32 `json:"podMTU"`
	} `json:"routing"`
	Parts []struct {
		Name        string `json:"name"`
		State       string `json:"state"`
		LastError   string `json:"lastError"`
		LastSuccess string `json:"lastSuccess"`
	} `json:"parts"`
}

func status(ctx context.Context, l *lab.Lab, n *lab.Node) (statusJSON, error) {
	var s statusJSON
	out, err := l.Routectl(ctx, n, "status", "-o", "json")
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(out, &s)
}

// sessionHistory says how often n's session to its ToR came up so far,
// from both ends: the agent logs every session state change, and the ToR's
// bgpd logs every neighbour change (log-neighbor-changes is on in FRR's
// datacenter defaults). Equal histories before and after, with the session
// up now on both sides, mean the session never bounced. FRR's neighbour
// counters cannot tell: a dynamic neighbour is deleted, counters and all,
// when its session drops.
func sessionHistory(ctx context.Context, l *lab.Lab, n *lab.Node) (string, error) {
	var m map[string]struct {
		BGPState string `json:"bgpState"`
	}
	r := n.Router
	if err := r.VTYJSON(ctx, "show bgp neighbors "+n.IP.String()+" json", &m); err != nil {
		return "", err
	}
	if st := m[n.IP.String()].BGPState; st != "Established" {
		return "", fmt.Errorf("%s: session to %s is %q", r.Name, n.IP, st)
	}
	ups := 0
	for _, line := range strings.Split(l.AgentLog(n, 1<<20), "\n") {
		if strings.Contains(line, `msg="bgp session state"`) && strings.Contains(line, "peer="+r.Addr.String()+" ") &&
			strings.Contains(line, "state=established") {
			ups++
		}
	}
	if ups == 0 {
		return "", fmt.Errorf("%s's log shows no established session to %s", n.Name, r.Name)
	}
	frrUps, err := frrSessionUps(r, n)
	if err != nil {
		return "", err
	}
	if frrUps == 0 {
		return "", fmt.Errorf("%s's bgpd log shows no session with %s coming up", r.Name, n.IP)
	}
	return fmt.Sprintf("the agent logged the session established %d times, %s logged it up %d times", ups, r.Name, frrUps), nil
}

// frrSessionUps counts the lines in which r's bgpd logged its session with
// n coming up ("%ADJCHANGE: neighbor 10.4.94.11(...) in vrf default Up").
func frrSessionUps(r *lab.Router, n *lab.Node) (int, error) {
	log, err := r.BGPLog()
	if err != nil {
		return 0, err
	}
	ups := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "ADJCHANGE: neighbor "+n.IP.String()+"(") && strings.HasSuffix(strings.TrimSpace(line), " Up") {
			ups++
		}
	}
	return ups, nil
}

// waitForEvent waits for a Warning event on the bgp-config ConfigMap whose
// note mentions every string of want: what `kubectl describe` would show.
func waitForEvent(ctx context.Context, l *lab.Lab, want []string) error {
	return lab.WaitFor(ctx, settle, fmt.Sprintf("an event on bgp-config mentioning %q", want), func() error {
		evs, err := l.Kube.EventsV1().Events("kube-system").List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=bgp-config"})
		if err != nil {
			return err
		}
		var notes []string
		for _, e := range evs.Items {
			if e.Type != "Warning" || e.Reason != "InvalidConfig" {
				continue
			}
			match := true
			for _, w := range want {
				match = match && strings.Contains(e.Note, w)
			}
			if match {
				return nil
			}
			notes = append(notes, e.Note)
		}
		return fmt.Errorf("none of %d events matches: %q", len(notes), notes)
	})
}

// metricsHave waits until n's metrics contain every line of want.
func metricsHave(ctx context.Context, l *lab.Lab, n *lab.Node, want ...string) error {
	return lab.WaitFor(ctx, settle, fmt.Sprintf("%s's metrics to show %q", n.Name, want), func() error {
		m, err := l.Metrics(ctx, n)
		if err != nil {
			return err
		}
		lines := strings.Split(m, "\n")
		for _, w := range want {
			if !slices.Contains(lines, w) {
				return fmt.Errorf("no line %q", w)
			}
		}
		return nil
	})
}

// restoreConfigAfter puts the lab's bgp-config back when t ends, passed or
// not.
func restoreConfigAfter(t *testing.T, l *lab.Lab) {
	t.Cleanup(func() {
		if _, err := l.ApplyBGPConfig(context.Background(), lab.BGPConfig); err != nil {
			t.Errorf("restoring bgp-config: %v", err)
		}
	})
}

// waitRejected waits until n's agent reports resourceVersion rv of the
// bgp-config rejected, and returns its status then.
func waitRejected(ctx context.Context, l *lab.Lab, n *lab.Node, rv string) (statusJSON, error) {
	var got statusJSON
	err := lab.WaitFor(ctx, settle, n.Name+" to report resourceVersion "+rv+" rejected", func() error {
		s, err := status(ctx, l, n)
		if err != nil {
			return err
		}
		if s.BGPConfig.ErrorResourceVersion != rv {
			return fmt.Errorf("not yet: %+v", s.BGPConfig)
		}
		got = s
		return nil
	})
	return got, err
}

// A bgp-config that does not parse is reported with peer index, field and
// value, and the agent keeps its last good configuration and its sessions.
func TestInvalidConfigKeepsLastGood(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[0]
	good, err := status(ctx, l, n)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, node := range l.Nodes {
		h, err := sessionHistory(ctx, l, node)
		if err != nil {
			t.Fatal(err)
		}
		before[node.Name] = h
	}
	restoreConfigAfter(t, l)

	cases := []struct {
		desc   string
		config string
		want   []string // every string must appear in the reported error
	}{
		{"unknown key", strings.Replace(lab.BGPConfig, "  peer-asn: 64524", "  peer-asnn: 64524", 1),
			[]string{"peers[0]", `"peer-asnn"`}},
		{"bad IP", strings.Replace(lab.BGPConfig, "peer-address: 10.4.83.1", "peer-address: 10.4.83.300", 1),
			[]string{"peers[1].peer-address", `"10.4.83.300"`}},
		{"missing ASN", strings.Replace(lab.BGPConfig, "  my-asn: 64512\n", "", 1),
			[]string{"peers[1].my-asn", "missing"}},
	}
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			if c.config == lab.BGPConfig {
				t.Fatal("the test's edit did not change the config")
			}
			rv, err := l.ApplyBGPConfig(ctx, c.config)
			if err != nil {
				t.Fatal(err)
			}
			for _, node := range l.Nodes {
				got, err := waitRejected(ctx, l, node, rv)
				if err != nil {
					t.Fatal(err)
				}
				for _, w := range c.want {
					if !strings.Contains(got.BGPConfig.Error, w) {
						t.Errorf("%s: error %q does not mention %s", node.Name, got.BGPConfig.Error, w)
					}
				}
				if err := waitForEvent(ctx, l, append([]string{"node " + node.Name}, c.want...)); err != nil {
					t.Error(err)
				}
				if err := metricsHave(ctx, l, node,
					`route_agent_config_stale{configmap="kube-system/bgp-config"} 1`,
					`route_agent_config_loaded{configmap="kube-system/bgp-config"} 1`,
					fmt.Sprintf(`route_agent_bgp_session_up{peer="%s"} 1`, node.Router.Addr)); err != nil {
					t.Error(err)
				}
				if got.BGPConfig.AppliedResourceVersion != good.BGPConfig.AppliedResourceVersion {
					t.Errorf("%s: config in force changed from resourceVersion %s to %s",
						node.Name, good.BGPConfig.AppliedResourceVersion, got.BGPConfig.AppliedResourceVersion)
				}
			}
		})
	}
	for _, node := range l.Nodes {
		after, err := sessionHistory(ctx, l, node)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: before the bad configs %s; after %s", node.Name, before[node.Name], after)
		if after != before[node.Name] {
			t.Errorf("%s's session bounced during the bad configs: before %s; after %s", node.Name, before[node.Name], after)
		}
		if err := compareWithFRR(ctx, l, node, node.Router); err != nil {
			t.Error(err)
		}
	}

	// A good config clears the error.
	if _, err := l.ApplyBGPConfig(ctx, lab.BGPConfig); err != nil {
		t.Fatal(err)
	}
	if err := metricsHave(ctx, l, n, `route_agent_config_stale{configmap="kube-system/bgp-config"} 0`); err != nil {
		t.Error(err)
	}
	err = lab.WaitFor(ctx, settle, "the error to clear", func() error {
		s, err := status(ctx, l, n)
		if err != nil {
			return err
		}
		if s.BGPConfig.Error != "" {
			return fmt.Errorf("error still reported: %s", s.BGPConfig.Error)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// Relabelling a node so that another peer's node-selector matches moves its
// session to that peer, without restarting the agent.
func TestRelabelMovesSession(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[1] // rack94-node2, peering with tor94
	from, to := n.Router, l.Routers[1]
	if from == to {
		t.Fatal("lab topology changed: node already on the target ToR")
	}
	t.Cleanup(func() {
		// Leave the lab as found even when the test fails half-way.
		if err := l.SetNodeLabel(context.Background(), n, lab.RouteLabel, "bgp-peer-94"); err != nil {
			t.Errorf("restoring the label of %s: %v", n.Name, err)
		}
		if err := l.WaitEstablished(context.Background(), n, from, settle); err != nil {
			t.Errorf("restoring the session of %s: %v", n.Name, err)
		}
	})

	move := func(label string, from, to *lab.Router) {
		t.Helper()
		if err := l.SetNodeLabel(ctx, n, lab.RouteLabel, label); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitEstablished(ctx, n, to, settle); err != nil {
			t.Fatal(err)
		}
		// The speaker now runs in the AS the new peer expects of nodes.
		if st, err := status(ctx, l, n); err != nil || st.BGPASN != to.NodeASN || st.BGPRouterID != n.IP.String() {
			t.Errorf("routectl status after the move: AS %d router-id %q (%v), want AS %d router-id %s",
				st.BGPASN, st.BGPRouterID, err, to.NodeASN, n.IP)
		}
		err := lab.WaitFor(ctx, settle, from.Name+" to drop "+n.Name, func() error {
			rows, err := l.Peers(ctx, n)
			if err != nil {
				return err
			}
			for _, r := range rows {
				if r.PeerAddress == from.Addr.String() {
					return fmt.Errorf("routectl still lists %s: %+v", from.Addr, r)
				}
			}
			nbs, err := from.Neighbors(ctx)
			if err != nil {
				return err
			}
			if nb, ok := nbs[n.IP.String()]; ok && nb.BGPState == "Established" {
				return fmt.Errorf("%s still has an established session with %s", from.Name, n.IP)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = lab.WaitFor(ctx, settle, to.Name+" to learn "+n.PodCIDR.String()+" from "+n.Name, func() error {
			nh, err := to.BestNextHop(ctx, n.PodCIDR.String())
			if err != nil {
				return err
			}
			if nh != n.IP.String() {
				return fmt.Errorf("next hop %q, want %s", nh, n.IP)
			}
			return compareWithFRR(ctx, l, n, to)
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	move("bgp-peer-83", from, to)
	if !l.AgentRunning(n) {
		t.Fatalf("the agent on %s died during the move:\n%s", n.Name, l.AgentLog(n, 30))
	}
	t.Logf("%s moved from %s to %s", n.Name, from.Name, to.Name)
	move("bgp-peer-94", to, from)
}

// SIGTERM stops the agent cleanly: it closes its session with a Cease
// notification, removes its socket and exits 0. Started again, it
// re-establishes and re-advertises.
func TestAgentStopsCleanlyOnSIGTERM(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[2]
	r := n.Router
	logBefore, err := r.BGPLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.StopAgent(n, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s still there after the agent stopped (stat: %v)", n.Socket, err)
	}
	out, err := l.Routectl(ctx, n, "bgp", "peers")
	if err == nil || !strings.Contains(string(out), "not running") {
		t.Errorf("routectl with the agent stopped: want a 'not running' message, got %v: %s", err, out)
	}
	// Dynamic neighbours vanish with their session, so the reason is only
	// in bgpd's log.
	err = lab.WaitFor(ctx, 20*time.Second, r.Name+" to log the agent's Cease", func() error {
		log, err := r.BGPLog()
		if err != nil {
			return err
		}
		// Only what bgpd logged since the SIGTERM.
		log = strings.TrimPrefix(log, logBefore)
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, n.IP.String()) && strings.Contains(line, "NOTIFICATION") && strings.Contains(line, "Cease") {
				return nil
			}
		}
		return fmt.Errorf("no NOTIFICATION with Cease from %s in bgpd's log:\n%s", n.IP, log)
	})
	if err != nil {
		t.Error(err)
	}
	err = lab.WaitFor(ctx, 20*time.Second, r.Name+" to withdraw "+n.PodCIDR.String(), func() error {
		nh, err := r.BestNextHop(ctx, n.PodCIDR.String())
		if err != nil {
			return err
		}
		if nh != "" {
			return fmt.Errorf("still routed via %s", nh)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	if err := l.StartAgent(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitEstablished(ctx, n, r, settle); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitConverged(ctx, settle); err != nil {
		t.Fatal(err)
	}
}

// The password is really used as a TCP MD5 key: with a wrong one the
// session cannot come up; with the right one it does.
func TestMD5PasswordIsEnforced(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[2] // rack83-node1: its ToR requires MD5
	r := n.Router
	wrong := strings.Replace(lab.BGPConfig, "password: rack83-md5", "password: not-the-key", 1)
	if wrong == lab.BGPConfig {
		t.Fatal("the lab's bgp-config has no rack-83 password to change")
	}
	restoreConfigAfter(t, l)
	if _, err := l.ApplyBGPConfig(ctx, wrong); err != nil {
		t.Fatal(err)
	}
	state := func() (string, error) {
		rows, err := l.Peers(ctx, n)
		if err != nil {
			return "", err
		}
		for _, row := range rows {
			if row.PeerAddress == r.Addr.String() {
				return row.SessionState, nil
			}
		}
		return "", fmt.Errorf("no row for %s: %+v", r.Addr, rows)
	}
	err := lab.WaitFor(ctx, settle, "the session with the wrong key to go down", func() error {
		s, err := state()
		if err != nil {
			return err
		}
		if s == "established" {
			return fmt.Errorf("still established")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Two connect retries (5 s apart) must fail, as both ends see it: the
	// agent's session stays down, and the ToR neither logs the neighbour
	// coming up nor holds the node's pod CIDR (only the node announces it).
	// This watches for a session coming up; it times nothing.
	frrBefore, err := frrSessionUps(r, n)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(12 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		s, err := state()
		if err != nil {
			t.Fatal(err)
		}
		if s == "established" {
			t.Fatalf("the session to %s came up with the wrong TCP MD5 key", r.Name)
		}
		if nh, err := r.BestNextHop(ctx, n.PodCIDR.String()); err != nil || nh != "" {
			t.Fatalf("%s holds %s via %q (err %v) although the node's key is wrong", r.Name, n.PodCIDR, nh, err)
		}
	}
	if ups, err := frrSessionUps(r, n); err != nil || ups != frrBefore {
		t.Fatalf("%s logged the session with %s up %d more times with the wrong key (err %v)", r.Name, n.IP, ups-frrBefore, err)
	}
	if _, err := l.ApplyBGPConfig(ctx, lab.BGPConfig); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitEstablished(ctx, n, r, settle); err != nil {
		t.Fatal(err)
	}
}

// routectl bgp routes shows what the ToR got from the node (advertised)
// and what the ToR sent it (received), path for path.
func TestRoutectlRoutesAgreeWithFRR(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	for _, n := range l.Nodes {
		r := n.Router
		err := lab.WaitFor(ctx, settle, n.Name+"'s paths to agree with "+r.Name, func() error {
			for _, dir := range []string{"advertised", "received"} {
				rows, err := l.Routes(ctx, n, dir)
				if err != nil {
					return err
				}
				var mine []string
				for _, row := range rows {
					if row.PeerAddress != r.Addr.String() {
						return fmt.Errorf("%s %s: row for unexpected peer %s", n.Name, dir, row.PeerAddress)
					}
					mine = append(mine, row.Prefix)
					if dir == "advertised" && (row.NextHop != n.IP.String() || row.Prefix != n.PodCIDR.String()) {
						return fmt.Errorf("%s advertises %s via %s, want only its pod CIDR %s via %s", n.Name, row.Prefix, row.NextHop, n.PodCIDR, n.IP)
					}
				}
				if len(mine) == 0 {
					return fmt.Errorf("%s has no %s paths", n.Name, dir)
				}
				slices.Sort(mine)
				// What the node advertises, the ToR received from it.
				frr, err := r.NeighborPrefixes(ctx, n.IP.String(), dir == "received")
				if err != nil {
					return err
				}
				if !slices.Equal(mine, frr) {
					return fmt.Errorf("%s %s %v, %s's view %v", n.Name, dir, mine, r.Name, frr)
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// bgpRouteRow is one row of `routectl bgp routes -o json` with the path
// attributes.
type bgpRouteRow struct {
	PeerAddress      string     `json:"peerAddress"`
	Prefix           string     `json:"prefix"`
	ASPath           []uint32   `json:"asPath"`
	Communities      []string   `json:"communities"`
	LargeCommunities []string   `json:"largeCommunities"`
	LocalPref        *uint32    `json:"localPref"`
	Since            *time.Time `json:"since"`
	AgeSeconds       *int64     `json:"ageSeconds"`
}

// frrPath is one path of FRR's `show bgp ipv4 unicast <prefix> json`.
type frrPath struct {
	ASPath struct {
		Segments []struct {
			List []uint32 `json:"list"`
		} `json:"segments"`
	} `json:"aspath"`
	LocPrf    *uint32 `json:"locPrf"`
	Community *struct {
		List []string `json:"list"`
	} `json:"community"`
	LargeCommunity *struct {
		List []string `json:"list"`
	} `json:"largeCommunity"`
	BestPath *struct {
		Overall bool `json:"overall"`
	} `json:"bestpath"`
	LastUpdate struct {
		Epoch int64 `json:"epoch"`
	} `json:"lastUpdate"`
	Peer struct {
		PeerID string `json:"peerId"`
	} `json:"peer"`
}

func (p frrPath) asPath() []uint32 {
	out := []uint32{}
	for _, s := range p.ASPath.Segments {
		out = append(out, s.List...)
	}
	return out
}

func (p frrPath) communities() []string {
	out := []string{}
	if p.Community != nil {
		out = append(out, p.Community.List...)
	}
	return out
}

// frrPaths returns r's paths to prefix, and the raw JSON for errors.
func frrPaths(ctx context.Context, r *lab.Router, prefix string) ([]frrPath, error) {
	var v struct {
		Paths []frrPath `json:"paths"`
	}
	err := r.VTYJSON(ctx, "show bgp ipv4 unicast "+prefix+" json", &v)
	return v.Paths, err
}

func bgpRoutes(ctx context.Context, l *lab.Lab, n *lab.Node, dir string) ([]bgpRouteRow, error) {
	out, err := l.Routectl(ctx, n, "bgp", "routes", dir, "-o", "json")
	if err != nil {
		return nil, err
	}
	var rows []bgpRouteRow
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("decoding routectl bgp routes %s on %s: %w: %s", dir, n.Name, err, out)
	}
	return rows, nil
}

// routectl bgp routes shows a path's AS path, LOCAL_PREF, communities and
// age as the ToR sees them. An advertised path is the one the ToR holds
// from the node, which got it no earlier than the agent originated it; a
// received path is the ToR's best path plus what the session adds: the
// ToR's AS over eBGP, LOCAL_PREF over iBGP only (the lab's rack 83).
func TestRoutectlPathAttributesAgreeWithFRR(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	for _, n := range l.Nodes {
		r := n.Router
		ibgp := r.NodeASN == r.ASN
		err := lab.WaitFor(ctx, settle, n.Name+"'s path attributes to agree with "+r.Name, func() error {
			adv, err := bgpRoutes(ctx, l, n, "advertised")
			if err != nil {
				return err
			}
			if len(adv) == 0 {
				return fmt.Errorf("%s advertises nothing", n.Name)
			}
			for _, row := range adv {
				paths, err := frrPaths(ctx, r, row.Prefix)
				if err != nil {
					return err
				}
				i := slices.IndexFunc(paths, func(p frrPath) bool { return p.Peer.PeerID == n.IP.String() })
				if i < 0 {
					return fmt.Errorf("%s has no path to %s from %s: %+v", r.Name, row.Prefix, n.IP, paths)
				}
				if err := sameAttrs(row, paths[i], ibgp); err != nil {
					return fmt.Errorf("%s advertised %s, %s's view: %w", n.Name, row.Prefix, r.Name, err)
				}
				// The ToR got the path no earlier than the agent made it.
				if row.Since == nil || row.Since.Unix() > paths[i].LastUpdate.Epoch {
					return fmt.Errorf("%s advertised %s since %v, but %s got it at %s", n.Name, row.Prefix, row.Since, r.Name,
						time.Unix(paths[i].LastUpdate.Epoch, 0).UTC())
				}
				if err := ageAgrees(row); err != nil {
					return fmt.Errorf("%s advertised %s: %w", n.Name, row.Prefix, err)
				}
			}

			recv, err := bgpRoutes(ctx, l, n, "received")
			if err != nil {
				return err
			}
			if len(recv) == 0 {
				return fmt.Errorf("%s received nothing", n.Name)
			}
			for _, row := range recv {
				paths, err := frrPaths(ctx, r, row.Prefix)
				if err != nil {
					return err
				}
				i := slices.IndexFunc(paths, func(p frrPath) bool { return p.BestPath != nil && p.BestPath.Overall })
				if i < 0 {
					return fmt.Errorf("%s has no best path to %s, which %s received from it: %+v", r.Name, row.Prefix, n.Name, paths)
				}
				best := paths[i]
				// A path the ToR originates (its connected networks) has
				// no LOCAL_PREF in its table; it sends its default, 100.
				if defaultLocalPref := uint32(100); ibgp && best.LocPrf == nil {
					best.LocPrf = &defaultLocalPref
				}
				if !ibgp {
					best.ASPath.Segments = append([]struct {
						List []uint32 `json:"list"`
					}{{List: []uint32{r.ASN}}}, best.ASPath.Segments...)
				}
				if err := sameAttrs(row, best, ibgp); err != nil {
					return fmt.Errorf("%s received %s, %s's best path: %w", n.Name, row.Prefix, r.Name, err)
				}
				if err := ageAgrees(row); err != nil {
					return fmt.Errorf("%s received %s: %w", n.Name, row.Prefix, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	for _, n := range []*lab.Node{l.Nodes[0], l.Nodes[len(l.Nodes)-1]} {
		for _, dir := range []string{"advertised", "received"} {
			out, err := l.Routectl(ctx, n, "bgp", "routes", dir)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("routectl bgp routes %s on %s:\n%s", dir, n.Name, out)
		}
	}
}

// A pool's bgp-advertisements give its LoadBalancer paths LOCAL_PREF and
// communities: routectl shows both as the ToR got them, the communities
// on every session and the local preference on iBGP (rack 83) only.
func TestRoutectlShowsCommunitiesAndLocalPref(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	ibgpNode, ebgpNode := l.Nodes[2], l.Nodes[0]
	if ibgpNode.Router.NodeASN != ibgpNode.Router.ASN || ebgpNode.Router.NodeASN == ebgpNode.Router.ASN {
		t.Fatalf("the lab's topology changed: want %s on iBGP and %s on eBGP", ibgpNode.Name, ebgpNode.Name)
	}
	restoreConfigAfter(t, l)
	const pool = "  avoid-buggy-ips: true\n"
	cfg := strings.Replace(lab.BGPConfig, pool, pool+"  bgp-advertisements:\n  - localpref: 150\n    communities: [\"64512:300\", \"64512:100\"]\n", 1)
	if cfg == lab.BGPConfig {
		t.Fatal("the lab's bgp-config has no pool to add advertisements to")
	}
	if _, err := l.ApplyBGPConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	// A Service with a ready endpoint and the Cluster policy: every node
	// advertises its address.
	lbService(ctx, t, l, "lb-attrs", corev1.ServiceExternalTrafficPolicyCluster, lab.EchoPort, nil)
	setEndpoint(ctx, t, l, "lb-attrs", podOf(t, l, ibgpNode))
	prefix := netip.PrefixFrom(lbAddress(ctx, t, l, "lb-attrs", time.Minute), 32).String()

	wantComms := []string{"64512:100", "64512:300"}
	for _, n := range []*lab.Node{ibgpNode, ebgpNode} {
		r, ibgp := n.Router, n == ibgpNode
		err := lab.WaitFor(ctx, settle, n.Name+"'s path to "+prefix+" with its attributes", func() error {
			rows, err := bgpRoutes(ctx, l, n, "advertised")
			if err != nil {
				return err
			}
			i := slices.IndexFunc(rows, func(r bgpRouteRow) bool { return r.Prefix == prefix })
			if i < 0 {
				return fmt.Errorf("%s does not advertise %s", n.Name, prefix)
			}
			row := rows[i]
			if !slices.Equal(row.Communities, wantComms) {
				return fmt.Errorf("%s advertises %s with communities %q, want %q", n.Name, prefix, row.Communities, wantComms)
			}
			if want := map[bool]string{true: "150", false: "none"}[ibgp]; fmtPtr(row.LocalPref) != want {
				return fmt.Errorf("%s advertises %s with local preference %s, want %s", n.Name, prefix, fmtPtr(row.LocalPref), want)
			}
			paths, err := frrPaths(ctx, r, prefix)
			if err != nil {
				return err
			}
			j := slices.IndexFunc(paths, func(p frrPath) bool { return p.Peer.PeerID == n.IP.String() })
			if j < 0 {
				return fmt.Errorf("%s has no path to %s from %s", r.Name, prefix, n.IP)
			}
			return sameAttrs(row, paths[j], ibgp)
		})
		if err != nil {
			t.Error(err)
		}
	}
	out, err := l.Routectl(ctx, ibgpNode, "bgp", "routes", "advertised")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("routectl bgp routes advertised on %s:\n%s", ibgpNode.Name, out)

	// Gone again before the next test.
	if err := l.Kube.CoreV1().Services("default").Delete(ctx, "lb-attrs", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		err := lab.WaitFor(ctx, settle, n.Name+" to withdraw "+prefix, func() error {
			rows, err := bgpRoutes(ctx, l, n, "advertised")
			if err != nil {
				return err
			}
			if slices.ContainsFunc(rows, func(r bgpRouteRow) bool { return r.Prefix == prefix }) {
				return fmt.Errorf("%s still advertises %s", n.Name, prefix)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// sameAttrs compares the attributes routectl shows with FRR's path. FRR
// gives every path a LOCAL_PREF; only iBGP carries it on the wire.
func sameAttrs(row bgpRouteRow, p frrPath, ibgp bool) error {
	var diffs []string
	if !slices.Equal(row.ASPath, p.asPath()) {
		diffs = append(diffs, fmt.Sprintf("AS path %v, FRR %v", row.ASPath, p.asPath()))
	}
	if !slices.Equal(row.Communities, p.communities()) {
		diffs = append(diffs, fmt.Sprintf("communities %q, FRR %q", row.Communities, p.communities()))
	}
	if p.LargeCommunity != nil && !slices.Equal(row.LargeCommunities, p.LargeCommunity.List) {
		diffs = append(diffs, fmt.Sprintf("large communities %q, FRR %q", row.LargeCommunities, p.LargeCommunity.List))
	}
	switch {
	case !ibgp && row.LocalPref != nil:
		diffs = append(diffs, fmt.Sprintf("local preference %d on an eBGP session", *row.LocalPref))
	case ibgp && (row.LocalPref == nil || p.LocPrf == nil || *row.LocalPref != *p.LocPrf):
		diffs = append(diffs, fmt.Sprintf("local preference %s, FRR %s", fmtPtr(row.LocalPref), fmtPtr(p.LocPrf)))
	}
	if len(diffs) > 0 {
		return errors.New(strings.Join(diffs, "; "))
	}
	return nil
}

// ageAgrees checks that the age routectl printed, a moment ago, is the
// time since the path came, which is in the past.
func ageAgrees(row bgpRouteRow) error {
	if row.Since == nil || row.AgeSeconds == nil {
		return fmt.Errorf("no since or ageSeconds")
	}
	age := int64(time.Since(*row.Since) / time.Second)
	if row.Since.After(time.Now()) || *row.AgeSeconds > age+1 || *row.AgeSeconds < age-30 {
		return fmt.Errorf("since %v, ageSeconds %d: want a time in the past and the %d seconds since", row.Since, *row.AgeSeconds, age)
	}
	return nil
}

func fmtPtr(v *uint32) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprint(*v)
}

// An agent restarted while the ConfigMap holds a rejected edit comes back
// with the last good configuration its earlier run saved, not with none.
func TestRestartWithRejectedConfigKeepsLastGood(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[0]
	good, err := status(ctx, l, n)
	if err != nil {
		t.Fatal(err)
	}
	restoreConfigAfter(t, l)
	rv, err := l.ApplyBGPConfig(ctx, strings.Replace(lab.BGPConfig, "peer-asn: 64524", "peer-asn: 0", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := waitRejected(ctx, l, n, rv); err != nil {
		t.Fatal(err)
	}
	if err := l.StopAgent(n, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(ctx, n); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitEstablished(ctx, n, n.Router, settle); err != nil {
		t.Fatal(err)
	}
	s, err := status(ctx, l, n)
	if err != nil {
		t.Fatal(err)
	}
	if s.BGPConfig.AppliedResourceVersion != good.BGPConfig.AppliedResourceVersion || s.BGPConfig.ErrorResourceVersion != rv {
		t.Errorf("after the restart: %+v, want resourceVersion %s in force and %s rejected",
			s.BGPConfig, good.BGPConfig.AppliedResourceVersion, rv)
	}
	if err := l.WaitConverged(ctx, settle); err != nil {
		t.Fatal(err)
	}
}
