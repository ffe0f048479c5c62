package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"routeagent.io/route-agent/e2e/bench"
	"routeagent.io/route-agent/e2e/lab"
	"routeagent.io/route-agent/routing"
)

// tunnelFig measures tunnel mode against native routing in one run:
//
//   - T1: a Node added to the API in tunnel mode (every node through the
//     VXLAN overlay) → its route through ra_vxlan on every rack node; the
//     peer figure is the same Node's direct route in native mode (P3's
//     job, measured here again so that both share the run);
//   - T2: TCP throughput between pods on different racks (iperf3, one
//     stream), native against VXLAN, each mode's pods created after the
//     agents switched, so that they get the mode's MTU as users' pods do.
//
// The agents are restarted into tunnel mode and back; the other figures
// run in native mode.
func tunnelFig(ctx context.Context, e *env) (rows []row, err error) {
	var racks []*lab.Node
	for _, n := range e.l.Nodes {
		if n.Router != nil && (n.Router.Name == "tor94" || n.Router.Name == "tor83") {
			racks = append(racks, n)
		}
	}
	var from, to *lab.Node
	for _, n := range racks {
		switch {
		case from == nil && n.Router.Name == "tor94":
			from = n
		case to == nil && n.Router.Name == "tor83":
			to = n
		}
	}
	if from == nil || to == nil {
		return nil, fmt.Errorf("the lab has no node on each rack")
	}

	var rack94 []*lab.Node
	for _, n := range racks {
		if n.Router.Name == "tor94" {
			rack94 = append(rack94, n)
		}
	}
	// In native mode only the new node's segment routes to it directly;
	// the others wait for BGP, which no agent behind the Node speaks.
	nativeAdd, err := nodeAddedRounds(ctx, e, rack94, "native", netip.MustParseAddr("10.4.94.14"))
	if err != nil {
		return nil, err
	}
	nativeBps, err := throughput(ctx, e.l, from, to, "native")
	if err != nil {
		return nil, err
	}

	tunnelArgs := []string{"--routing-mode=tunnel", "--tunnel-protocol=vxlan", "--auto-direct-node-routes=false"}
	if err := restartAgents(ctx, e.l, racks, tunnelArgs); err != nil {
		return nil, err
	}
	defer func() {
		// Back to native for the figures that follow.
		if rerr := restartAgents(context.WithoutCancel(ctx), e.l, racks, nil); rerr != nil && err == nil {
			err = rerr
		}
	}()
	tunnelAdd, err := nodeAddedRounds(ctx, e, racks, "tunnel", netip.MustParseAddr("10.4.83.14"))
	if err != nil {
		return nil, err
	}
	vxlanBps, err := throughput(ctx, e.l, from, to, "VXLAN")
	if err != nil {
		return nil, err
	}

	ta, na := median(tunnelAdd), median(nativeAdd)
	logf("T1: Node added → route on all %d rack nodes: tunnel %s (%s); direct route on the %d rack-94 nodes in native mode %s (%s)", len(racks), ms(ta), list(tunnelAdd), len(rack94), ms(na), list(nativeAdd))
	logf("T2: pod-to-pod TCP across racks: native %s, VXLAN %s", gbps(nativeBps), gbps(vxlanBps))
	return []row{
		{
			id:    "T1",
			what:  fmt.Sprintf("tunnel mode: Node added to the API → its route through ra_vxlan on all %d rack nodes (peer: native mode, direct route on the %d same-segment nodes; median of %d)", len(racks), len(rack94), *rounds),
			agent: ms(ta), peer: "native " + ms(na), ratio: fmt.Sprintf("%.2f×", float64(ta)/float64(max(na, time.Millisecond))),
			goal: "≤ 500 ms", met: yesNo(ta <= 500*time.Millisecond),
		},
		{
			id:    "T2",
			what:  "TCP throughput pod → pod across racks, one iperf3 stream, 5 s (median of 3): VXLAN against native routing",
			agent: "VXLAN " + gbps(vxlanBps), peer: "native " + gbps(nativeBps), ratio: fmt.Sprintf("%.2f×", vxlanBps/nativeBps),
			goal: "report", met: "—",
		},
	}, nil
}

// restartAgents restarts the agents of nodes with args and waits until
// their sessions are up again.
func restartAgents(ctx context.Context, l *lab.Lab, nodes []*lab.Node, args []string) error {
	logf("restarting %d agents with %v", len(nodes), args)
	for _, n := range nodes {
		if err := l.StopAgent(n, 15*time.Second); err != nil {
			return err
		}
		n.AgentArgs = args
		if err := l.StartAgent(ctx, n); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if err := l.WaitEstablished(ctx, n, n.Router, 2*time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// nodeAddedRounds adds and deletes a Node object (no agent behind it) with
// InternalIP ip, *rounds times, and returns how long each took until every
// node of watch had a route of ours to its pod CIDR.
func nodeAddedRounds(ctx context.Context, e *env, watch []*lab.Node, mode string, ip netip.Addr) ([]time.Duration, error) {
	cidr := netip.MustParsePrefix("10.5.118.0/24")
	match := func(r *netlink.Route) bool {
		if int(r.Protocol) != routing.Protocol || r.Dst == nil {
			return false
		}
		ones, _ := r.Dst.Mask.Size()
		a, _ := netip.AddrFromSlice(r.Dst.IP)
		return ones == cidr.Bits() && a.Unmap() == cidr.Addr()
	}
	var watches []*bench.RouteWatch
	for _, n := range watch {
		w, err := bench.WatchRoutes(n.NS, match)
		if err != nil {
			return nil, err
		}
		defer w.Close()
		watches = append(watches, w)
	}
	nodes := e.l.Kube.CoreV1().Nodes()
	var adds []time.Duration
	for i := range *rounds {
		name := fmt.Sprintf("bench-t1-%s-%d", mode, i+1)
		for _, w := range watches {
			w.Expect(1)
		}
		obj := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name},
			}},
		}
		t0 := time.Now()
		created, err := nodes.Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			return nil, err
		}
		if len(created.Status.Addresses) == 0 {
			created.Status = obj.Status
			if _, err := nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				return nil, err
			}
		}
		var worst time.Duration
		for j, w := range watches {
			t, err := w.Wait(ctx, 1, 30*time.Second)
			if err != nil {
				return nil, fmt.Errorf("%s round %d, %s: %w", mode, i+1, watch[j].Name, err)
			}
			worst = max(worst, t.Sub(t0))
		}
		adds = append(adds, worst)
		for _, w := range watches {
			w.Expect(0)
		}
		if err := nodes.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return nil, err
		}
		for j, w := range watches {
			if _, err := w.Wait(ctx, 0, 30*time.Second); err != nil {
				return nil, fmt.Errorf("%s round %d, deleting, %s: %w", mode, i+1, watch[j].Name, err)
			}
		}
		logf("T1 %s round %d: Node added → route on all %d watched nodes %s", mode, i+1, len(watch), ms(worst))
	}
	return adds, nil
}

// throughput makes a pod on each of from and to and returns the median of
// three 5-second iperf3 runs from the first to the second, in bits/s.
func throughput(ctx context.Context, l *lab.Lab, from, to *lab.Node, mode string) (float64, error) {
	src, err := l.AddPod(ctx, from, "bench-iperf-src")
	if err != nil {
		return 0, err
	}
	defer l.DeletePod(context.WithoutCancel(ctx), src)
	dst, err := l.AddPod(ctx, to, "bench-iperf-dst")
	if err != nil {
		return 0, err
	}
	defer l.DeletePod(context.WithoutCancel(ctx), dst)
	server, err := l.StartBackground(dst.NS, "iperf3", "--server", "--bind", dst.IP.String())
	if err != nil {
		return 0, err
	}
	defer server.Stop()
	var runs []float64
	for i := range 3 {
		bps, err := iperf(ctx, src, dst.IP, 5)
		if err != nil {
			return 0, fmt.Errorf("%s iperf3 run %d: %w; the server said: %s", mode, i+1, err, server.Output())
		}
		runs = append(runs, bps)
		logf("T2 %s run %d: %s", mode, i+1, gbps(bps))
	}
	slices.Sort(runs)
	return runs[1], nil
}

func gbps(bps float64) string { return fmt.Sprintf("%.2f Gbit/s", bps/1e9) }
