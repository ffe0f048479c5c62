//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"routeagent.io/route-agent/e2e/lab"
)

// nextHops returns the next hops of r's valid paths to prefix.
func nextHops(ctx context.Context, r *lab.Router, prefix string) ([]string, error) {
	routes, err := r.Routes(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range routes[prefix] {
		if p.Valid && len(p.NextHops) > 0 {
			out = append(out, p.NextHops[0].IP)
		}
	}
	slices.Sort(out)
	return out, nil
}

// lbService creates a LoadBalancer Service of one TCP port in default,
// removed when the test ends. targetPort is the echo responders' port.
func lbService(ctx context.Context, t *testing.T, l *lab.Lab, name string, policy corev1.ServiceExternalTrafficPolicy, port int32, annotations map[string]string) {
	t.Helper()
	svcs := l.Kube.CoreV1().Services("default")
	_, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: policy,
			Ports: []corev1.ServicePort{{Name: "echo", Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(lab.EchoPort)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = svcs.Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = l.Kube.DiscoveryV1().EndpointSlices("default").Delete(context.Background(), name+"-1", metav1.DeleteOptions{})
	})
}

// lbAddress waits until Service default/name has an address and returns it.
func lbAddress(ctx context.Context, t *testing.T, l *lab.Lab, name string, wait time.Duration) netip.Addr {
	t.Helper()
	var ip netip.Addr
	err := lab.WaitFor(ctx, wait, "an address for default/"+name, func() error {
		got, err := l.Kube.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(got.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("no ingress yet")
		}
		ip, err = netip.ParseAddr(got.Status.LoadBalancer.Ingress[0].IP)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// endpointSlice is Service name's one ready endpoint: pod p, on p's node,
// as the EndpointSlice controller would write it.
func endpointSlice(name string, p *lab.Pod) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{p.IP.String()},
			NodeName:   ptr.To(p.Node.Name),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true)},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("echo"), Port: ptr.To(int32(lab.EchoPort)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
}

// setEndpoint creates or replaces Service name's endpoint slice with pod p.
func setEndpoint(ctx context.Context, t *testing.T, l *lab.Lab, name string, p *lab.Pod) {
	t.Helper()
	eps := l.Kube.DiscoveryV1().EndpointSlices("default")
	want := endpointSlice(name, p)
	cur, err := eps.Get(ctx, want.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = eps.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		want.ResourceVersion = cur.ResourceVersion
		_, err = eps.Update(ctx, want, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// restartOnCleanup starts n's agent again when the test ends, if the test
// left it dead, and waits for its session, so the next test finds the lab
// whole.
func restartOnCleanup(t *testing.T, l *lab.Lab, n *lab.Node) {
	t.Cleanup(func() {
		if l.AgentRunning(n) {
			return
		}
		ctx := context.Background()
		if err := l.StartAgent(ctx, n); err != nil {
			t.Errorf("restarting %s's agent: %v", n.Name, err)
			return
		}
		if err := l.WaitEstablished(ctx, n, n.Router, settle); err != nil {
			t.Error(err)
		}
	})
}

// waitHops waits until r's valid paths to prefix have exactly the next
// hops want (none: withdrawn).
func waitHops(ctx context.Context, t *testing.T, r *lab.Router, prefix string, want ...string) {
	t.Helper()
	slices.Sort(want)
	err := lab.WaitFor(ctx, settle, fmt.Sprintf("%s's paths to %s", r.Name, prefix), func() error {
		got, err := nextHops(ctx, r, prefix)
		if err != nil {
			return err
		}
		if !slicesEqual(got, want) {
			return fmt.Errorf("next hops %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// requestFromOutside sends an echo request from the outside host to
// target, through the fabric and the node's kube-proxy, and returns the
// sources pod p's responder saw for it: the answer came from p.
func requestFromOutside(ctx context.Context, t *testing.T, l *lab.Lab, target netip.AddrPort, p *lab.Pod) []netip.AddrPort {
	t.Helper()
	mark := echoMark(l, p)
	// The first SYN may race the ToR's FIB update; retry.
	err := lab.WaitFor(ctx, settle, "an echo from the outside to "+target.String(), func() error {
		return lab.EchoAt(ctx, l.Outside, target, "tcp")
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, l.AgentLog(p.Node, 10))
	}
	seen := echoSources(l, p, "tcp", mark)
	if len(seen) == 0 {
		t.Fatalf("the echo to %s was answered, but not by pod %s on %s", target, p.Name, p.Node.Name)
	}
	return seen
}

// A LoadBalancer Service gets an address from the bgp-config's pool, the
// elected allocator writes it, and with externalTrafficPolicy Local only
// the node hosting the ready endpoint advertises it. A request from the
// outside host reaches the pod through the ToR and the node's kube-proxy,
// and the pod sees the client's own address. Moving the endpoint moves the
// advertisement and the traffic follows; deleting the Service withdraws it
// everywhere.
func TestLoadBalancerLocalFollowsEndpoint(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	a, c := l.Nodes[0], l.Nodes[2]
	tor94, tor83 := a.Router, c.Router
	lbService(ctx, t, l, "lb-local", corev1.ServiceExternalTrafficPolicyLocal, lab.EchoPort, nil)
	ip := lbAddress(ctx, t, l, "lb-local", time.Minute)
	if pool := netip.MustParsePrefix(lab.LBPool); !pool.Contains(ip) || ip == pool.Addr() {
		t.Fatalf("address %s is not a usable address of the pool %s", ip, pool)
	}
	prefix := netip.PrefixFrom(ip, 32).String()
	target := netip.AddrPortFrom(ip, lab.EchoPort)
	t.Logf("default/lb-local got %s", ip)

	setEndpoint(ctx, t, l, "lb-local", podOf(t, l, a))
	// Only rack94-node1 advertises: tor94 has it from that node alone.
	waitHops(ctx, t, tor94, prefix, a.IP.String())
	// routectl says the same on each node, with the reason.
	for n, want := range map[*lab.Node]string{a: "yes", c: "no local endpoint"} {
		out, err := l.Routectl(ctx, n, "services")
		if err != nil || !strings.Contains(string(out), "default/lb-local") || !strings.Contains(string(out), want) {
			t.Errorf("routectl services on %s: %v, want %q:\n%s", n.Name, err, want, out)
		}
	}
	seen := requestFromOutside(ctx, t, l, target, podOf(t, l, a))
	if src := seen[len(seen)-1].Addr(); src != lab.OutsideIP {
		t.Errorf("with externalTrafficPolicy Local the pod saw the request from %s, want the client's own %s", src, lab.OutsideIP)
	}

	start := time.Now()
	setEndpoint(ctx, t, l, "lb-local", podOf(t, l, c))
	waitHops(ctx, t, tor83, prefix, c.IP.String())
	waitHops(ctx, t, tor94, prefix, tor83.LinkAddr.Addr().String())
	t.Logf("endpoint moved to %s: advertisement moved in %s", c.Name, time.Since(start).Round(time.Millisecond))
	seen = requestFromOutside(ctx, t, l, target, podOf(t, l, c))
	if src := seen[len(seen)-1].Addr(); src != lab.OutsideIP {
		t.Errorf("after the move the pod saw the request from %s, want the client's own %s", src, lab.OutsideIP)
	}

	if err := l.Kube.CoreV1().Services("default").Delete(ctx, "lb-local", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitHops(ctx, t, tor94, prefix)
	waitHops(ctx, t, tor83, prefix)
}

// With externalTrafficPolicy Cluster every selected node advertises the
// address while the Service has a ready endpoint anywhere, and a request
// landing on any of them reaches the endpoint. A second Service with the
// same sharing key and another port shares the address, and each port
// reaches its own Service's pod.
func TestLoadBalancerClusterAndSharedAddress(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	a, b, c := l.Nodes[0], l.Nodes[1], l.Nodes[2]
	tor94, tor83 := a.Router, c.Router
	share := map[string]string{"metallb.universe.tf/allow-shared-ip": "lab-share"}
	lbService(ctx, t, l, "lb-cluster", corev1.ServiceExternalTrafficPolicyCluster, lab.EchoPort, share)
	lbService(ctx, t, l, "lb-shared", corev1.ServiceExternalTrafficPolicyCluster, 8007, share)
	ip := lbAddress(ctx, t, l, "lb-cluster", time.Minute)
	if ip2 := lbAddress(ctx, t, l, "lb-shared", time.Minute); ip2 != ip {
		t.Fatalf("Services with the sharing key %q and different ports got %s and %s, want one address", share["metallb.universe.tf/allow-shared-ip"], ip, ip2)
	}
	prefix := netip.PrefixFrom(ip, 32).String()
	t.Logf("default/lb-cluster and default/lb-shared share %s", ip)

	// No endpoint yet: nobody advertises.
	time.Sleep(time.Second)
	if hops, err := nextHops(ctx, tor94, prefix); err != nil || len(hops) != 0 {
		t.Errorf("before any endpoint is ready, tor94 has %s via %v (%v), want no path", prefix, hops, err)
	}
	setEndpoint(ctx, t, l, "lb-cluster", podOf(t, l, c))
	setEndpoint(ctx, t, l, "lb-shared", podOf(t, l, a))
	// Every node advertises: tor94 from both rack-94 nodes (and tor83's
	// copy from rack83-node1), tor83 from rack83-node1. tor83 also has
	// tor94's copy unless tor94 chose tor83's own as best: its AS path is
	// as long as the rack-94 nodes' ([64512] against [64513]), so FRR
	// keeps the older path or, for paths of the same second, the lower
	// router ID, tor83's 10.4.83.1; then it has nothing to send tor83.
	waitHops(ctx, t, tor94, prefix, a.IP.String(), b.IP.String(), tor83.LinkAddr.Addr().String())
	err := lab.WaitFor(ctx, settle, fmt.Sprintf("%s's paths to %s", tor83.Name, prefix), func() error {
		got, err := nextHops(ctx, tor83, prefix)
		if err != nil {
			return err
		}
		alone, withCopy := []string{c.IP.String()}, []string{c.IP.String(), tor94.LinkAddr.Addr().String()}
		slices.Sort(withCopy) // as nextHops sorts
		if !slicesEqual(got, alone) && !slicesEqual(got, withCopy) {
			return fmt.Errorf("next hops %v, want %v or %v", got, alone, withCopy)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tor94.VTY(ctx, "show bgp ipv4 unicast "+prefix); err == nil {
		t.Logf("tor94's paths to %s, with the reason for its best:\n%s", prefix, out)
	}

	// Port 7 is lb-cluster's, served by the pod on rack83-node1, whichever
	// node the ToR picked; port 8007 is lb-shared's, on rack94-node1.
	requestFromOutside(ctx, t, l, netip.AddrPortFrom(ip, lab.EchoPort), podOf(t, l, c))
	requestFromOutside(ctx, t, l, netip.AddrPortFrom(ip, 8007), podOf(t, l, a))

	// Once neither Service has a ready endpoint, nobody advertises.
	for _, name := range []string{"lb-cluster", "lb-shared"} {
		if err := l.Kube.DiscoveryV1().EndpointSlices("default").Delete(ctx, name+"-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitHops(ctx, t, tor94, prefix)
	waitHops(ctx, t, tor83, prefix)
}

// A pool with one address serves one Service; the next one stays pending
// with a Warning Event that says why, and gets the address once the first
// Service is gone.
func TestLoadBalancerPoolExhausted(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	const tiny = "10.7.1.10"
	cfg := lab.BGPConfig + `- name: tiny
  protocol: bgp
  auto-assign: false
  addresses:
  - ` + tiny + `/32
`
	if _, err := l.ApplyBGPConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	restoreConfigAfter(t, l)
	pool := map[string]string{"metallb.universe.tf/address-pool": "tiny"}
	lbService(ctx, t, l, "lb-tiny-1", corev1.ServiceExternalTrafficPolicyCluster, lab.EchoPort, pool)
	if ip := lbAddress(ctx, t, l, "lb-tiny-1", time.Minute); ip.String() != tiny {
		t.Fatalf("default/lb-tiny-1 got %s from pool tiny, want %s", ip, tiny)
	}
	lbService(ctx, t, l, "lb-tiny-2", corev1.ServiceExternalTrafficPolicyCluster, 8007, pool)
	var msg string
	err := lab.WaitFor(ctx, settle, "a Warning Event on default/lb-tiny-2", func() error {
		evs, err := l.Kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=lb-tiny-2"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == "AllocationFailed" {
				msg = e.Message
				return nil
			}
		}
		return fmt.Errorf("%d events, none AllocationFailed", len(evs.Items))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("default/lb-tiny-2: AllocationFailed: %s", msg)
	if !strings.Contains(msg, "tiny") {
		t.Errorf("the Event %q does not name the pool", msg)
	}
	if svc, err := l.Kube.CoreV1().Services("default").Get(ctx, "lb-tiny-2", metav1.GetOptions{}); err != nil || len(svc.Status.LoadBalancer.Ingress) != 0 {
		t.Errorf("default/lb-tiny-2 with its pool exhausted: %v, ingress %v, want pending", err, svc.Status.LoadBalancer.Ingress)
	}
	if err := l.Kube.CoreV1().Services("default").Delete(ctx, "lb-tiny-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ip := lbAddress(ctx, t, l, "lb-tiny-2", settle); ip.String() != tiny {
		t.Errorf("after lb-tiny-1 went, default/lb-tiny-2 got %s, want %s", ip, tiny)
	}
}

// lbLeader returns the node whose agent holds the allocator's Lease.
func lbLeader(ctx context.Context, t *testing.T, l *lab.Lab) *lab.Node {
	t.Helper()
	lease, err := l.Kube.CoordinationV1().Leases("kube-system").Get(ctx, "route-agent-lbipam", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity == n.Name {
			return n
		}
	}
	t.Fatalf("the Lease route-agent-lbipam is held by %v, not by a lab node", lease.Spec.HolderIdentity)
	return nil
}

// Killing the allocating agent hands allocation to another agent once its
// Lease expires: the existing Service keeps its address, and a Service
// created meanwhile gets a different one.
func TestLoadBalancerLeaderKilled(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	lbService(ctx, t, l, "lb-before", corev1.ServiceExternalTrafficPolicyCluster, lab.EchoPort, nil)
	before := lbAddress(ctx, t, l, "lb-before", time.Minute)
	leader := lbLeader(ctx, t, l)
	t.Logf("allocator on %s; default/lb-before has %s", leader.Name, before)
	if err := l.KillAgent(leader); err != nil {
		t.Fatal(err)
	}
	restartOnCleanup(t, l, leader)
	killed := time.Now()
	lbService(ctx, t, l, "lb-after", corev1.ServiceExternalTrafficPolicyCluster, lab.EchoPort, nil)
	// The Lease lasts 15 s; the new leader re-reads every assignment first.
	after := lbAddress(ctx, t, l, "lb-after", time.Minute)
	t.Logf("default/lb-after got %s %s after the leader was killed", after, time.Since(killed).Round(100*time.Millisecond))
	if now := lbLeader(ctx, t, l); now == leader {
		t.Errorf("the Lease is still held by the killed agent on %s", leader.Name)
	}
	if after == before {
		t.Errorf("the new leader handed out %s again", after)
	}
	if got := lbAddress(ctx, t, l, "lb-before", time.Second); got != before {
		t.Errorf("default/lb-before changed from %s to %s across the leader change", before, got)
	}
}

// A Service deleted while its advertising agent is dead (kill -9) stays in
// the ToR's table only as a stale path: the restarted agent re-advertises
// what is current and sends End-of-RIB, after which the ToR holds exactly
// that, without the deleted Service.
func TestGracefulRestartForgetsWhatWentWhileDown(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	a := l.Nodes[0]
	lbService(ctx, t, l, "lb-gr", corev1.ServiceExternalTrafficPolicyLocal, lab.EchoPort, nil)
	ip := lbAddress(ctx, t, l, "lb-gr", time.Minute)
	prefix := netip.PrefixFrom(ip, 32).String()
	setEndpoint(ctx, t, l, "lb-gr", podOf(t, l, a))
	waitHops(ctx, t, a.Router, prefix, a.IP.String())

	if err := l.KillAgent(a); err != nil {
		t.Fatal(err)
	}
	restartOnCleanup(t, l, a)
	for _, p := range []string{prefix, a.PodCIDR.String()} {
		if err := waitStale(ctx, a.Router, p, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Kube.CoreV1().Services("default").Delete(ctx, "lb-gr", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := l.Kube.DiscoveryV1().EndpointSlices("default").Delete(ctx, "lb-gr-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if st, err := stalePaths(ctx, a.Router, prefix); err != nil || len(st) != 1 || !st[0] {
		t.Fatalf("with the agent dead, %s on %s: stale %v (%v), want kept as stale", prefix, a.Router.Name, st, err)
	}
	start := time.Now()
	if err := l.StartAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	waitHops(ctx, t, a.Router, prefix)
	gone := time.Since(start)
	if err := waitStale(ctx, a.Router, a.PodCIDR.String(), false); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted agent: %s gone from %s %s after the start (pod CIDR fresh after %s)",
		prefix, a.Router.Name, gone.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

func slicesEqual(a, b []string) bool { return len(a) == len(b) && (len(a) == 0 || slices.Equal(a, b)) }
