//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	podMatrix(ctx, t, l)
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

	// On the link between the ToRs, pod traffic to rack 83 is VXLAN between
	// the node addresses.
	r := a.Router
	capture, err := l.StartBackground(r.NS, "tcpdump", "-n", "-l", "--immediate-mode", "-i", "link0", "-c", "3", "udp", "port", "8472")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let tcpdump start
	if err := lab.Echo(ctx, from, far.IP, "tcp"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // for tcpdump to print what it caught
	seen := capture.Stop()
	t.Logf("tcpdump on %s's link to the other ToR:\n%s", r.Name, seen)
	if !strings.Contains(seen, a.IP.String()+".") || !strings.Contains(seen, c.IP.String()+".8472") {
		t.Errorf("no VXLAN from %s to %s:8472 on the ToR link:\n%s", a.IP, c.IP, seen)
	}
	// A bulk transfer of 1400-byte segments crosses the tunnel.
	if n, err := lab.EchoTransfer(ctx, from, far.IP, 300, 1400); err != nil {
		t.Error(err)
	} else {
		t.Logf("%d bytes each way in 1400-byte writes through the tunnel", n)
	}

	// The device deleted by hand is back, with its routes and entries.
	start := time.Now()
	if _, err := l.NodeExec(ctx, a, "ip", "link", "del", "ra_vxlan"); err != nil {
		t.Fatal(err)
	}
	if err := waitTunnelPeer(ctx, l, a, c.IP.String(), c.PodCIDR, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("ra_vxlan deleted by hand on %s: back with its route, FDB and neighbour entries after %s", a.Name, time.Since(start).Round(time.Millisecond))
	if err := lab.Echo(ctx, from, far.IP, "tcp"); err != nil {
		t.Error(err)
	}

	// A Node that joins off the racks' segments is reached through the
	// tunnel from every node; deleted, it leaves no route, FDB or neighbour
	// entry anywhere.
	extra := addNode(ctx, t, l, "rack95-node9", "10.4.95.19", "10.5.117.0/24")
	for _, n := range l.Nodes {
		if err := waitTunnelPeer(ctx, l, n, extra.ip, extra.cidr, true); err != nil {
			t.Error(err)
		}
	}
	extra.remove()
	for _, n := range l.Nodes {
		if err := waitTunnelPeer(ctx, l, n, extra.ip, extra.cidr, false); err != nil {
			t.Error(err)
		}
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
		// The kernel's own routes (the link-local address of a device
		// recreated earlier in this test) are not the agent's either.
		if line == "" || strings.HasPrefix(line, "Unknown message") || isNeigh && !strings.Contains(line, "ra_vxlan") || strings.Contains(line, "proto kernel") {
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

	// Tunnel only: without autoDirectNodeRoutes every node, on the rack or
	// not, is reached through the overlay.
	restartAll(ctx, t, l, "--routing-mode=tunnel", "--auto-direct-node-routes=false")
	for _, n := range l.Nodes {
		want := map[string]string{}
		for _, o := range l.Nodes {
			if o != n {
				want[o.PodCIDR.String()] = tunnelVia(o)
			}
		}
		if err := waitRouteKinds(ctx, l, n, want); err != nil {
			t.Fatal(err)
		}
	}
	podMatrix(ctx, t, l)

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

// podMatrix checks ping and a TCP round trip from every pod to every other.
func podMatrix(ctx context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, from := range l.Pods {
		for _, to := range l.Pods {
			if from == to {
				continue
			}
			if out, err := l.PodExec(ctx, from, "ping", "-c", "2", "-W", "2", to.IP.String()); err != nil {
				t.Errorf("ping from %s to %s: %v\n%s", from.Name, to.Name, err, out)
			}
			if err := lab.Echo(ctx, from, to.IP, "tcp"); err != nil {
				t.Error(err)
			}
		}
	}
}

// waitTunnelPeer waits until n holds (or, with present false, no longer
// holds) the route, FDB entry and neighbour entry that reach target's pods
// through ra_vxlan: the node at ip with pod CIDR cidr.
func waitTunnelPeer(ctx context.Context, l *lab.Lab, n *lab.Node, ip string, cidr netip.Prefix, present bool) error {
	gw := cidr.Addr().String()
	return lab.WaitFor(ctx, settle, fmt.Sprintf("%s's tunnel entries for %s present=%v", n.Name, ip, present), func() error {
		route, _ := l.NodeExec(ctx, n, "ip", "route", "show", cidr.String(), "proto", "201")
		neigh, _ := l.NodeExec(ctx, n, "ip", "neigh", "show", "dev", "ra_vxlan")
		fdb, _ := l.NodeExec(ctx, n, "bridge", "fdb", "show", "dev", "ra_vxlan")
		has := []bool{
			strings.Contains(string(route), "via "+gw+" dev ra_vxlan"),
			strings.Contains(string(neigh), gw+" lladdr"),
			strings.Contains(string(fdb), "dst "+ip+" "),
		}
		for i, h := range has {
			if h != present {
				return fmt.Errorf("entry %d of route/neigh/fdb is %v:\n%s%s%s", i, h, route, neigh, fdb)
			}
		}
		return nil
	})
}

// fakeNode is a Node object with no agent or namespace behind it.
type fakeNode struct {
	ip     string
	cidr   netip.Prefix
	remove func()
}

func addNode(ctx context.Context, t *testing.T, l *lab.Lab, name, ip, cidr string) *fakeNode {
	t.Helper()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
	}
	created, err := l.Kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if _, err := l.Kube.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	removed := false
	remove := func() {
		if !removed {
			removed = true
			if err := l.Kube.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(remove)
	return &fakeNode{ip: ip, cidr: netip.MustParsePrefix(cidr), remove: remove}
}

// TestGeneveRefusedWithoutTheModule: on a kernel without the geneve module
// (as in this lab) the agent refuses --tunnel-protocol geneve at start-up,
// naming the module and the way out, before it touches anything.
func TestGeneveRefusedWithoutTheModule(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[0]
	out, err := l.AgentCommand(ctx, n, "--node-name", n.Name, "--kubeconfig", "/nonexistent",
		"--api-socket", filepath.Join(t.TempDir(), "agent.sock"), "--routing-mode=tunnel", "--tunnel-protocol=geneve")
	if err == nil {
		t.Fatalf("route-agent --tunnel-protocol geneve started:\n%s", out)
	}
	if _, statErr := os.Stat("/sys/module/geneve"); statErr == nil {
		t.Skipf("this kernel has the geneve module; the agent stopped for another reason: %s", out)
	}
	const want = `tunnel protocol geneve: this kernel has no geneve support (module "geneve" not loaded or not built; modprobe geneve, or use --tunnel-protocol vxlan)`
	if !strings.Contains(string(out), want) {
		t.Errorf("route-agent --tunnel-protocol geneve said:\n%s\nwant %q", out, want)
	}
}
