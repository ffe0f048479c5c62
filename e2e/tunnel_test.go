//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"routeagent.io/route-agent/e2e/lab"
)

// restartAll restarts every agent with args added to its command line.
func restartAll(ctx context.Context, t *testing.T, l *lab.Lab, args ...string) {
	t.Helper()
	for _, n := range l.Nodes {
		if err := l.StopAgent(n, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		n.AgentArgs = args
		if err := l.StartAgent(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range l.Nodes {
		if err := l.WaitEstablished(ctx, n, n.Router, settle); err != nil {
			t.Fatal(err)
		}
	}
}

// routeKinds waits until n's routectl routes shows each prefix of want
// installed with the given kind, and returns the rows.
func waitRouteKinds(ctx context.Context, l *lab.Lab, n *lab.Node, want map[string]string) error {
	return lab.WaitFor(ctx, settle, n.Name+"'s route kinds", func() error {
		rows, err := routectlRoutes(ctx, l, n)
		if err != nil {
			return err
		}
		got := map[string]string{}
		for _, r := range rows {
			if r.State == "installed" {
				got[r.Prefix] = r.Kind + " via " + r.NextHop + " dev " + r.Device
			}
		}
		for prefix, w := range want {
			if got[prefix] != w {
				return fmt.Errorf("%s: %q, want %q (all: %v)", prefix, got[prefix], w, got)
			}
		}
		return nil
	})
}

// Tunnel mode with autoDirectNodeRoutes: nodes on the same segment are
// routed directly, the other rack through the VXLAN overlay; pods reach
// each other either way, the path across the racks no longer shows the
// ToRs, the pods' MTU leaves room for the encapsulation, and large packets
// are refused at the source rather than lost. Back in native mode, the
// tunnel device and its routes are gone.
func TestTunnelModeFallback(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		restartAll(ctx, t, l)
	})
	restartAll(ctx, t, l, "--routing-mode=tunnel", "--tunnel-protocol=vxlan", "--auto-direct-node-routes=true")
	a, b, c := l.Nodes[0], l.Nodes[1], l.Nodes[2]
	tunnelVia := func(n *lab.Node) string { return "tunnel via " + n.PodCIDR.Addr().String() + " dev ra_vxlan" }
	checks := map[*lab.Node]map[string]string{
		a: {b.PodCIDR.String(): "direct via " + b.IP.String() + " dev eth0", c.PodCIDR.String(): tunnelVia(c)},
		b: {a.PodCIDR.String(): "direct via " + a.IP.String() + " dev eth0", c.PodCIDR.String(): tunnelVia(c)},
		c: {a.PodCIDR.String(): tunnelVia(a), b.PodCIDR.String(): tunnelVia(b)},
	}
	for n, want := range checks {
		if err := waitRouteKinds(ctx, l, n, want); err != nil {
			t.Fatal(err)
		}
	}
	for _, from := range l.Pods {
		for _, to := range l.Pods {
			if from != to {
				if err := lab.Echo(ctx, from, to.IP, "tcp"); err != nil {
					t.Error(err)
				}
			}
		}
	}
	// Across the racks the overlay hides the fabric: no ToR answers.
	from, far := podOf(t, l, a), podOf(t, l, c)
	out, err := l.PodExec(ctx, from, "traceroute", "-n", "-q", "1", "-w", "2", "-m", "8", far.IP.String())
	if err != nil {
		t.Fatalf("traceroute: %v\n%s", err, out)
	}
	t.Logf("traceroute through the tunnel:\n%s", out)
	for _, r := range l.Routers {
		if strings.Contains(string(out), " "+r.Addr.String()+" ") {
			t.Errorf("the tunnelled path shows %s", r.Name)
		}
	}

	// The MTU: underlay 1500 minus VXLAN's 50, in routectl status and the
	// CNI config, so a pod made now gets it.
	st, err := status(ctx, l, a)
	if err != nil {
		t.Fatal(err)
	}
	if st.Routing.Mode != "tunnel" || st.Routing.PodMTU != 1450 || st.Routing.TunnelDevice != "ra_vxlan" || st.Routing.TunnelPort != 8472 {
		t.Errorf("routectl status routing = %+v, want tunnel, ra_vxlan on 8472, pod MTU 1450", st.Routing)
	}
	err = lab.WaitFor(ctx, settle, "the CNI config's MTU", func() error {
		conf, err := os.ReadFile(filepath.Join(a.CNIConfDir, "10-route-agent.conflist"))
		if err != nil {
			return err
		}
		if !strings.Contains(string(conf), `"mtu": 1450`) {
			return fmt.Errorf("no mtu 1450 in\n%s", conf)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := l.AddPod(ctx, a, a.Name+"-mtu")
	if err != nil {
		t.Fatal(err)
	}
	defer l.DeletePod(context.Background(), pod)
	if out, err := l.PodExec(ctx, pod, "ip", "link", "show", "eth0"); err != nil || !strings.Contains(string(out), "mtu 1450") {
		t.Errorf("the new pod's eth0: %s (%v), want mtu 1450", out, err)
	}
	// 1422 bytes of ICMP payload + 28 of headers fill the 1450 exactly.
	if out, err := l.PodExec(ctx, pod, "ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1422", far.IP.String()); err != nil {
		t.Errorf("a full-size packet through the tunnel: %v\n%s", err, out)
	}
	out, err = l.PodExec(ctx, pod, "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1423", far.IP.String())
	if err == nil || !strings.Contains(strings.ToLower(string(out)), "message too long") {
		t.Errorf("one byte more than the MTU: want a local 'message too long', got %v\n%s", err, out)
	}

	// An agent restarted in the same mode adopts the device as it is: same
	// ifindex, and no link, route, neighbour or FDB change at all.
	index := func() string {
		out, err := l.NodeExec(ctx, a, "cat", "/sys/class/net/ra_vxlan/ifindex")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out))
	}
	before := index()
	mon, err := l.StartBackground(a.NS, "ip", "monitor", "link", "route", "neigh")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := l.StopAgent(a, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := l.StartAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := l.WaitEstablished(ctx, a, a.Router, settle); err != nil {
		t.Fatal(err)
	}
	if err := waitRouteKinds(ctx, l, a, checks[a]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // past the settling of learned routes, and a reconcile after it
	// The pods' neighbour entries age and are probed by the kernel
	// meanwhile; those are not the agent's.
	var changes []string
	for _, line := range strings.Split(mon.Stop(), "\n") {
		isNeigh := strings.Contains(line, " lladdr ") || strings.HasSuffix(strings.TrimSpace(line), "FAILED") || strings.HasSuffix(strings.TrimSpace(line), "INCOMPLETE")
		if line == "" || strings.HasPrefix(line, "Unknown message") || isNeigh && !strings.Contains(line, "ra_vxlan") {
			continue
		}
		changes = append(changes, line)
	}
	if len(changes) > 0 {
		t.Errorf("kernel changes on %s across a restart in tunnel mode:\n%s", a.Name, strings.Join(changes, "\n"))
	}
	if after := index(); after != before {
		t.Errorf("ra_vxlan was recreated across the restart: ifindex %s, then %s", before, after)
	}

	// Back to native: the device goes, with its routes.
	restartAll(ctx, t, l)
	waitAllRoutes(ctx, t, l)
	for _, n := range l.Nodes {
		err := lab.WaitFor(ctx, settle, n.Name+" without ra_vxlan", func() error {
			if out, err := l.NodeExec(ctx, n, "ip", "link", "show", "ra_vxlan"); err == nil {
				return fmt.Errorf("ra_vxlan still there: %s", out)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}
