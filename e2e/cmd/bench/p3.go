package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"routeagent.io/route-agent/e2e/bench"
	"routeagent.io/route-agent/e2e/lab"
	"routeagent.io/route-agent/routing"
)

// p3 adds a Node object on rack 94's segment (no agent behind it), as the
// kubelet registers one, and times until every other rack-94 node has its
// direct route (protocol 201, pod CIDR via the new node's InternalIP).
func p3(ctx context.Context, e *env) ([]row, error) {
	var rack94 []*lab.Node
	for _, n := range e.l.Nodes {
		if n.Router != nil && n.Router.Name == "tor94" {
			rack94 = append(rack94, n)
		}
	}
	if len(rack94) == 0 {
		return nil, fmt.Errorf("the lab has no rack-94 nodes")
	}
	ip := netip.MustParseAddr("10.4.94.13")
	cidr := netip.MustParsePrefix("10.5.117.0/24")
	match := func(r *netlink.Route) bool {
		if int(r.Protocol) != routing.Protocol || r.Dst == nil {
			return false
		}
		ones, _ := r.Dst.Mask.Size()
		a, _ := netip.AddrFromSlice(r.Dst.IP)
		g, _ := netip.AddrFromSlice(r.Gw)
		return ones == cidr.Bits() && a.Unmap() == cidr.Addr() && g.Unmap() == ip
	}
	var watches []*bench.RouteWatch
	for _, n := range rack94 {
		w, err := bench.WatchRoutes(n.NS, match)
		if err != nil {
			return nil, err
		}
		defer w.Close()
		watches = append(watches, w)
	}
	logf("P3: Node objects on rack 94 (%s, pods %s), %d rounds, watching %d rack-94 nodes", ip, cidr, *rounds, len(rack94))
	var adds, dels []time.Duration
	nodes := e.l.Kube.CoreV1().Nodes()
	for i := range *rounds {
		name := fmt.Sprintf("bench-p3-node%d", i+1)
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
			// The API server dropped the status on create: set it as the
			// kubelet would next.
			created.Status = obj.Status
			if _, err := nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				return nil, err
			}
			logf("P3: the API server dropped the status on create; the time includes an UpdateStatus")
		}
		var worst time.Duration
		for j, w := range watches {
			t, err := w.Wait(ctx, 1, 30*time.Second)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", i+1, rack94[j].Name, err)
			}
			worst = max(worst, t.Sub(t0))
		}
		adds = append(adds, worst)

		for _, w := range watches {
			w.Expect(0)
		}
		t0 = time.Now()
		if err := nodes.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return nil, err
		}
		var dworst time.Duration
		for j, w := range watches {
			t, err := w.Wait(ctx, 0, 30*time.Second)
			if err != nil {
				return nil, fmt.Errorf("round %d, deleting, %s: %w", i+1, rack94[j].Name, err)
			}
			dworst = max(dworst, t.Sub(t0))
		}
		dels = append(dels, dworst)
		logf("P3 round %d: Node added → route on every rack-94 node %s; Node deleted → route gone %s", i+1, ms(worst), ms(dworst))
	}
	m := median(adds)
	logf("P3: add %s (median of %s); delete %s (median of %s)", ms(m), list(adds), ms(median(dels)), list(dels))
	return []row{{
		id:    "P3",
		what:  fmt.Sprintf("Node added to the API (rack 94, no agent) → direct route on the other %d rack-94 nodes (median of %d)", len(rack94), *rounds),
		agent: ms(m), peer: "—", ratio: "—", goal: "≤ 500 ms", met: yesNo(m <= 500*time.Millisecond),
	}}, nil
}
