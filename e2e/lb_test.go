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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// A LoadBalancer Service gets an address from the bgp-config's pool, the
// elected allocator writes it, and with externalTrafficPolicy Local only
// the node hosting the ready endpoint advertises it; moving the endpoint
// moves the advertisement; deleting the Service withdraws it everywhere.
func TestLoadBalancerLocalFollowsEndpoint(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	waitAllRoutes(ctx, t, l)
	a, c := l.Nodes[0], l.Nodes[2]
	tor94, tor83 := a.Router, c.Router
	svcs := l.Kube.CoreV1().Services("default")
	svc, err := svcs.Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "lb-local"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports: []corev1.ServicePort{{Name: "echo", Protocol: corev1.ProtocolTCP, Port: 7}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svcs.Delete(context.Background(), "lb-local", metav1.DeleteOptions{}) })
	var ip netip.Addr
	err = lab.WaitFor(ctx, time.Minute, "an address for default/lb-local", func() error {
		got, err := svcs.Get(ctx, svc.Name, metav1.GetOptions{})
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
	if pool := netip.MustParsePrefix(lab.LBPool); !pool.Contains(ip) || ip == pool.Addr() {
		t.Fatalf("address %s is not a usable address of the pool %s", ip, pool)
	}
	prefix := netip.PrefixFrom(ip, 32).String()
	t.Logf("default/lb-local got %s", ip)

	eps := l.Kube.DiscoveryV1().EndpointSlices("default")
	endpointOn := func(n *lab.Node) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "lb-local-1", Labels: map[string]string{discoveryv1.LabelServiceName: "lb-local"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses:  []string{podOf(t, l, n).IP.String()},
				NodeName:   ptr.To(n.Name),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("echo"), Port: ptr.To(int32(7)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
	}
	if _, err := eps.Create(ctx, endpointOn(a), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Only rack94-node1 advertises: tor94 has it from that node alone.
	waitHops := func(r *lab.Router, want []string) time.Duration {
		t.Helper()
		start := time.Now()
		err := lab.WaitFor(ctx, 30*time.Second, fmt.Sprintf("%s's paths to %s", r.Name, prefix), func() error {
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
		return time.Since(start)
	}
	waitHops(tor94, []string{a.IP.String()})
	// routectl says the same on each node, with the reason.
	for n, want := range map[*lab.Node]string{a: "yes", c: "no local endpoint"} {
		out, err := l.Routectl(ctx, n, "services")
		if err != nil || !strings.Contains(string(out), "default/lb-local") || !strings.Contains(string(out), want) {
			t.Errorf("routectl services on %s: %v, want %q:\n%s", n.Name, err, want, out)
		}
	}

	moved := endpointOn(c)
	cur, err := eps.Get(ctx, "lb-local-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	moved.ResourceVersion = cur.ResourceVersion
	start := time.Now()
	if _, err := eps.Update(ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitHops(tor83, []string{c.IP.String()})
	waitHops(tor94, []string{tor83.LinkAddr.Addr().String()})
	t.Logf("endpoint moved to %s: advertisement moved in %s", c.Name, time.Since(start).Round(time.Millisecond))

	if err := svcs.Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = eps.Delete(ctx, "lb-local-1", metav1.DeleteOptions{})
	waitHops(tor94, nil)
	waitHops(tor83, nil)
}

func slicesEqual(a, b []string) bool { return len(a) == len(b) && (len(a) == 0 || slices.Equal(a, b)) }
