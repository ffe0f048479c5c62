//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"routeagent.io/route-agent/e2e/lab"
)

// podOf returns the lab's pod on node n.
func podOf(t *testing.T, l *lab.Lab, n *lab.Node) *lab.Pod {
	t.Helper()
	for _, p := range l.Pods {
		if p.Node == n {
			return p
		}
	}
	t.Fatalf("no pod on %s", n.Name)
	return nil
}

// kernelRoute is one line of `ip -j route show proto 201`.
type kernelRoute struct {
	Dst      string `json:"dst"`
	Gateway  string `json:"gateway"`
	Dev      string `json:"dev"`
	Protocol string `json:"protocol"`
}

// agentRoutes returns n's routes of the agent's protocol, dst → "via gw dev".
func agentRoutes(ctx context.Context, l *lab.Lab, n *lab.Node) (map[string]string, error) {
	out, err := l.NodeExec(ctx, n, "ip", "-j", "route", "show", "proto", "201")
	if err != nil {
		return nil, err
	}
	var rs []kernelRoute
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("decoding %q: %w", out, err)
	}
	m := map[string]string{}
	for _, r := range rs {
		m[r.Dst] = "via " + r.Gateway + " dev " + r.Dev
	}
	return m, nil
}

// routeRow is one row of `routectl routes -o json`.
type routeRow struct {
	Prefix  string `json:"prefix"`
	NextHop string `json:"nextHop"`
	Device  string `json:"device"`
	Kind    string `json:"kind"`
	For     string `json:"for"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
}

func routectlRoutes(ctx context.Context, l *lab.Lab, n *lab.Node) ([]routeRow, error) {
	out, err := l.Routectl(ctx, n, "routes", "-o", "json")
	if err != nil {
		return nil, err
	}
	var rows []routeRow
	return rows, json.Unmarshal(out, &rows)
}

// wantRoutes is what every node of the seed's two racks must hold: a direct
// route to the pod CIDR of each node on its rack, and the other rack's pod
// CIDRs via its own ToR, all as the agent's (protocol 201).
func wantRoutes(l *lab.Lab, n *lab.Node) map[string]string {
	want := map[string]string{}
	for _, o := range l.Nodes {
		if o == n {
			continue
		}
		if o.Router == n.Router {
			want[o.PodCIDR.String()] = "via " + o.IP.String() + " dev eth0"
		} else {
			want[o.PodCIDR.String()] = "via " + n.Router.Addr.String() + " dev eth0"
		}
	}
	return want
}

// routesConverged checks that n's kernel holds every route of wantRoutes.
func routesConverged(ctx context.Context, l *lab.Lab, n *lab.Node) error {
	got, err := agentRoutes(ctx, l, n)
	if err != nil {
		return err
	}
	for dst, via := range wantRoutes(l, n) {
		if got[dst] != via {
			return fmt.Errorf("%s: route to %s is %q, want %q (all: %v)", n.Name, dst, got[dst], via, got)
		}
	}
	return nil
}

func waitAllRoutes(ctx context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, n := range l.Nodes {
		if err := lab.WaitFor(ctx, settle, n.Name+"'s routes", func() error { return routesConverged(ctx, l, n) }); err != nil {
			t.Fatal(err)
		}
	}
}

// Every pod reaches every other, on its rack and across the racks: ping,
// and a TCP and a UDP round trip to the pod's echo responder.
func TestPodsReachEveryPod(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	for _, from := range l.Pods {
		for _, to := range l.Pods {
			if from == to {
				continue
			}
			if out, err := l.PodExec(ctx, from, "ping", "-c", "2", "-W", "2", to.IP.String()); err != nil {
				t.Errorf("ping from %s (%s) to %s (%s): %v\n%s", from.Name, from.IP, to.Name, to.IP, err, out)
			}
			for _, proto := range []string{"tcp", "udp"} {
				if err := lab.Echo(ctx, from, to.IP, proto); err != nil {
					t.Error(err)
				}
			}
		}
	}
}

// ip route on each node shows direct routes for the nodes of its rack and
// BGP routes via its ToR for the other rack, all with protocol 201, and
// routectl routes says the same with each route's kind.
func TestKernelRoutesOnEachNode(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	for _, n := range l.Nodes {
		rows, err := routectlRoutes(ctx, l, n)
		if err != nil {
			t.Fatal(err)
		}
		byPrefix := map[string]routeRow{}
		for _, r := range rows {
			byPrefix[r.Prefix] = r
		}
		for _, o := range l.Nodes {
			if o == n {
				continue
			}
			r, ok := byPrefix[o.PodCIDR.String()]
			wantKind, wantFor, wantNH := "bgp", n.Router.Addr.String(), n.Router.Addr.String()
			if o.Router == n.Router {
				wantKind, wantFor, wantNH = "direct", o.Name, o.IP.String()
			}
			if !ok || r.Kind != wantKind || r.For != wantFor || r.NextHop != wantNH || r.State != "installed" || r.Device != "eth0" {
				t.Errorf("%s: routectl routes row for %s = %+v, want kind %s for %s via %s installed on eth0", n.Name, o.PodCIDR, r, wantKind, wantFor, wantNH)
			}
		}
		// The node's own pod CIDR is never routed elsewhere.
		if r, ok := byPrefix[n.PodCIDR.String()]; ok && r.State == "installed" {
			t.Errorf("%s: its own pod CIDR is installed as %+v", n.Name, r)
		}
	}
}

// traceroute -n from a pod on rack 94: to a pod on the same rack the path
// is straight to the other node; to a pod on rack 83 it goes through
// 10.4.94.1 then 10.4.83.1, as seed 004 shows.
func TestTraceroute(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	from := podOf(t, l, l.Nodes[0])
	same, other := podOf(t, l, l.Nodes[1]), podOf(t, l, l.Nodes[2])
	hops := func(to *lab.Pod) []string {
		out, err := l.PodExec(ctx, from, "traceroute", "-n", "-q", "1", "-w", "2", "-m", "10", to.IP.String())
		if err != nil {
			t.Fatalf("traceroute to %s: %v\n%s", to.IP, err, out)
		}
		t.Logf("traceroute from %s to %s:\n%s", from.Name, to.Name, out)
		var hs []string
		for _, line := range strings.Split(string(out), "\n")[1:] {
			if f := strings.Fields(line); len(f) >= 2 {
				hs = append(hs, f[1])
			}
		}
		return hs
	}
	gw := l.Nodes[0].PodCIDR.Addr().Next().String() // the node's end of the pod's veth
	if got, want := hops(same), []string{gw, l.Nodes[1].IP.String(), same.IP.String()}; !slices.Equal(got, want) {
		t.Errorf("same-rack hops %v, want %v (the node, the other node, the pod: no router)", got, want)
	}
	if got, want := hops(other), []string{gw, "10.4.94.1", "10.4.83.1", l.Nodes[2].IP.String(), other.IP.String()}; !slices.Equal(got, want) {
		t.Errorf("cross-rack hops %v, want %v", got, want)
	}
}

// A route deleted by hand comes back, and a node's uplink that goes down
// and up gets every route back, with no help but the agent's.
func TestRoutesHeal(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[0]
	waitAllRoutes(ctx, t, l)
	before, err := status(ctx, l, n)
	if err != nil {
		t.Fatal(err)
	}
	for dst := range wantRoutes(l, n) {
		start := time.Now()
		if _, err := l.NodeExec(ctx, n, "ip", "route", "del", dst, "proto", "201"); err != nil {
			t.Fatal(err)
		}
		if err := lab.WaitFor(ctx, settle, dst+" back", func() error { return routesConverged(ctx, l, n) }); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s deleted by hand on %s: back after %s", dst, n.Name, time.Since(start).Round(time.Millisecond))
	}
	after, err := status(ctx, l, n)
	if err != nil {
		t.Fatal(err)
	}
	if healed := after.Routing.Heals - before.Routing.Heals; healed < uint64(len(wantRoutes(l, n))) {
		t.Errorf("routectl status counts %d heals, want at least %d", healed, len(wantRoutes(l, n)))
	}

	start := time.Now()
	if _, err := l.NodeExec(ctx, n, "ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	// A link going down takes its routes with it.
	if err := lab.WaitFor(ctx, settle, "routes gone with the link", func() error {
		got, err := agentRoutes(ctx, l, n)
		if err != nil {
			return err
		}
		if len(got) != 0 {
			return fmt.Errorf("still %v", got)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if _, err := l.NodeExec(ctx, n, "ip", "link", "set", "eth0", "up"); err != nil {
		t.Fatal(err)
	}
	// The default route is the host's, not the agent's: put it back as the
	// host's network configuration would.
	if _, err := l.NodeExec(ctx, n, "ip", "route", "replace", "default", "via", n.Router.Addr.String()); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitFor(ctx, settle, "routes back after the link bounce", func() error { return routesConverged(ctx, l, n) }); err != nil {
		t.Fatal(err)
	}
	t.Logf("uplink of %s down and up: every route back %s after the link went down", n.Name, time.Since(start).Round(time.Millisecond))
	if err := l.WaitEstablished(ctx, n, n.Router, settle); err != nil {
		t.Fatal(err)
	}
}

// A route of another protocol inside the pod CIDR range is left alone, as
// is the host's default route, through the agent's reconciles.
func TestForeignRoutesUntouched(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[0]
	waitAllRoutes(ctx, t, l)
	defaultBefore, err := l.NodeExec(ctx, n, "ip", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	foreign := "10.5.114.77/32"
	if _, err := l.NodeExec(ctx, n, "ip", "route", "add", foreign, "via", n.Router.Addr.String(), "proto", "static"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.NodeExec(context.Background(), n, "ip", "route", "del", foreign, "proto", "static") })
	// Make the agent reconcile: a deleted route of its own is a change
	// it acts on at once.
	if _, err := l.NodeExec(ctx, n, "ip", "route", "del", l.Nodes[2].PodCIDR.String(), "proto", "201"); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitFor(ctx, settle, "the healed route", func() error { return routesConverged(ctx, l, n) }); err != nil {
		t.Fatal(err)
	}
	out, err := l.NodeExec(ctx, n, "ip", "route", "show", foreign)
	if err != nil || !strings.Contains(string(out), "proto static") {
		t.Errorf("the static route %s is gone or changed: %q (%v)", foreign, out, err)
	}
	defaultAfter, err := l.NodeExec(ctx, n, "ip", "route", "show", "default")
	if err != nil || string(defaultAfter) != string(defaultBefore) {
		t.Errorf("default route changed from %q to %q (%v)", defaultBefore, defaultAfter, err)
	}
}

// A Node that joins gets a direct route on the nodes of its segment, and
// once deleted from the API it leaves no route behind on any node.
func TestDeletedNodeLeavesNoRoute(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	const name, cidr, ip = "rack94-node9", "10.5.115.0/24", "10.4.94.19"
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
	created, err := l.Kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = node.Status
	if _, err := l.Kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			l.Kube.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
		}
	})
	start := time.Now()
	for _, n := range l.Nodes[:2] {
		err := lab.WaitFor(ctx, settle, n.Name+" routes the new node", func() error {
			got, err := agentRoutes(ctx, l, n)
			if err != nil {
				return err
			}
			if got[cidr] != "via "+ip+" dev eth0" {
				return fmt.Errorf("route to %s: %q", cidr, got[cidr])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("a new Node on rack 94: both rack-94 nodes route its pod CIDR %s after %s", cidr, time.Since(start).Round(time.Millisecond))
	if err := l.Kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted = true
	for _, n := range l.Nodes {
		err := lab.WaitFor(ctx, settle, n.Name+" forgets the deleted node", func() error {
			got, err := agentRoutes(ctx, l, n)
			if err != nil {
				return err
			}
			if via, ok := got[cidr]; ok {
				return fmt.Errorf("still routes %s %s", cidr, via)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// A learned default route is refused unless asked for: the ToR's default
// shows in routectl routes as refused, and the host's default stays.
func TestLearnedDefaultRouteRefused(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[0]
	r := n.Router
	defaultBefore, err := l.NodeExec(ctx, n, "ip", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	if err := vtyConf(ctx, r, fmt.Sprintf("router bgp %d", r.ASN), "address-family ipv4 unicast", "neighbor NODES default-originate"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vtyConf(context.Background(), r, fmt.Sprintf("router bgp %d", r.ASN), "address-family ipv4 unicast", "no neighbor NODES default-originate")
	})
	err = lab.WaitFor(ctx, settle, "the learned default route to be refused", func() error {
		rows, err := routectlRoutes(ctx, l, n)
		if err != nil {
			return err
		}
		for _, row := range rows {
			if row.Prefix == "0.0.0.0/0" {
				if row.State != "refused" || !strings.Contains(row.Reason, "--install-default-route") {
					return fmt.Errorf("default route row %+v, want refused naming --install-default-route", row)
				}
				return nil
			}
		}
		return fmt.Errorf("no row for 0.0.0.0/0 in %+v", rows)
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := l.Routectl(ctx, n, "bgp", "routes", "received")
	if err != nil || !regexp.MustCompile(`0\.0\.0\.0/0 .* refused: learned default route`).Match(out) {
		t.Errorf("routectl bgp routes received does not show the default refused: %v\n%s", err, out)
	}
	defaultAfter, err := l.NodeExec(ctx, n, "ip", "route", "show", "default")
	if err != nil || string(defaultAfter) != string(defaultBefore) || strings.Contains(string(defaultAfter), "proto 201") {
		t.Errorf("default route changed from %q to %q (%v)", defaultBefore, defaultAfter, err)
	}
}

// vtyConf applies configuration lines on r.
func vtyConf(ctx context.Context, r *lab.Router, lines ...string) error {
	args := []string{"-c", "configure terminal"}
	for _, line := range lines {
		args = append(args, "-c", line)
	}
	return r.VTYArgs(ctx, args...)
}

// An agent restarted with nothing changed changes no route: `ip monitor
// route` on the node stays silent across the stop, the start and the
// resync, both for a clean stop and for a kill -9.
func TestAgentRestartChangesNoRoute(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[0]
	waitAllRoutes(ctx, t, l)
	for _, stop := range []struct {
		name string
		do   func() error
	}{
		{"SIGTERM", func() error { return l.StopAgent(n, 15*time.Second) }},
		{"SIGKILL", func() error { return l.KillAgent(n) }},
	} {
		t.Run(stop.name, func(t *testing.T) {
			mon, err := l.StartBackground(n.NS, "ip", "monitor", "route")
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // let ip subscribe
			if err := stop.do(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := l.StartAgent(ctx, n); err != nil {
				t.Fatal(err)
			}
			if err := l.WaitEstablished(ctx, n, n.Router, settle); err != nil {
				t.Fatal(err)
			}
			// Settled: every route the agent's own, none kept on trust.
			err = lab.WaitFor(ctx, 2*settle, "the restarted agent to settle", func() error {
				rows, err := routectlRoutes(ctx, l, n)
				if err != nil {
					return err
				}
				for _, r := range rows {
					if strings.Contains(r.For, "settles") {
						return fmt.Errorf("%s still %s", r.Prefix, r.For)
					}
				}
				return routesConverged(ctx, l, n)
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("restart after %s: settled %s after the start", stop.name, time.Since(start).Round(time.Millisecond))
			time.Sleep(time.Second) // a last reconcile after settling
			// The kernel's own routes (an IPv6 link-local address coming
			// back after an earlier test's link bounce) are not changes
			// the agent made; every other line is.
			var changes []string
			for _, line := range strings.Split(mon.Stop(), "\n") {
				if line != "" && !strings.Contains(line, "proto kernel") {
					changes = append(changes, line)
				}
			}
			if len(changes) > 0 {
				t.Errorf("route changes on %s across an agent restart:\n%s", n.Name, strings.Join(changes, "\n"))
			}
		})
	}
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// pingCounts parses ping's summary.
func pingCounts(out string) (sent, received int, err error) {
	m := pingSummary.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("no ping summary in %q", out)
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, nil
}

// stalePaths reports, for r's paths to prefix, whether each is stale.
func stalePaths(ctx context.Context, r *lab.Router, prefix string) ([]bool, error) {
	var v struct {
		Paths []struct {
			Stale bool `json:"stale"`
		} `json:"paths"`
	}
	if err := r.VTYJSON(ctx, "show bgp ipv4 unicast "+prefix+" json", &v); err != nil {
		return nil, err
	}
	var out []bool
	for _, p := range v.Paths {
		out = append(out, p.Stale)
	}
	return out, nil
}

// waitStale waits until r has exactly one path to prefix, stale or fresh
// as stale says (graceful restart keeps a dead agent's paths as stale).
func waitStale(ctx context.Context, r *lab.Router, prefix string, stale bool) error {
	what := map[bool]string{true: " stale on ", false: " fresh on "}[stale]
	return lab.WaitFor(ctx, settle, prefix+what+r.Name, func() error {
		st, err := stalePaths(ctx, r, prefix)
		if err != nil {
			return err
		}
		if len(st) != 1 || st[0] != stale {
			return fmt.Errorf("paths stale: %v", st)
		}
		return nil
	})
}

// Killing both agents of rack 94 with -9 and starting them again loses no
// packet between pods on the two rack-94 nodes (their direct routes stay in
// the kernel and are adopted), nor across the racks: the ToR keeps a dead
// agent's pod CIDR, marked stale (graceful restart), until the agent is
// back and has advertised it again.
func TestKill9KeepsTraffic(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	a, b := l.Nodes[0], l.Nodes[1]
	waitAllRoutes(ctx, t, l)
	from := podOf(t, l, a)
	same, other := podOf(t, l, b), podOf(t, l, l.Nodes[2])
	pingSame, err := l.StartBackground(from.NS, "ping", "-i", "0.05", "-W", "1", same.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	pingOther, err := l.StartBackground(from.NS, "ping", "-i", "0.05", "-W", "1", other.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	for _, n := range []*lab.Node{a, b} {
		if err := l.KillAgent(n); err != nil {
			t.Fatal(err)
		}
	}
	// Dead, but the ToR keeps their routes, stale.
	for _, n := range []*lab.Node{a, b} {
		if err := waitStale(ctx, n.Router, n.PodCIDR.String(), true); err != nil {
			t.Error(err)
		}
	}
	time.Sleep(time.Second) // both dead for a while
	for _, n := range []*lab.Node{a, b} {
		if err := l.StartAgent(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*lab.Node{a, b} {
		if err := l.WaitEstablished(ctx, n, n.Router, settle); err != nil {
			t.Fatal(err)
		}
	}
	waitAllRoutes(ctx, t, l)
	for _, n := range []*lab.Node{a, b} {
		if err := waitStale(ctx, n.Router, n.PodCIDR.String(), false); err != nil {
			t.Error(err)
		}
	}
	time.Sleep(time.Second)
	sentSame, gotSame, err := pingCounts(pingSame.Stop())
	if err != nil {
		t.Fatal(err)
	}
	sentOther, gotOther, err := pingCounts(pingOther.Stop())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 and restart of both rack-94 agents: same rack %d/%d replies (%d lost); across racks %d/%d replies (%d lost)",
		gotSame, sentSame, sentSame-gotSame, gotOther, sentOther, sentOther-gotOther)
	if gotSame != sentSame || sentSame < 40 {
		t.Errorf("same-rack ping lost %d of %d packets across the restart", sentSame-gotSame, sentSame)
	}
	if gotOther != sentOther || sentOther < 40 {
		t.Errorf("cross-rack ping lost %d of %d packets across the restart", sentOther-gotOther, sentOther)
	}
}
