package cluster

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"routeagent.io/route-agent/cluster/snapshot"
)

// svcSpec describes a Service for the tests.
type svcSpec struct {
	ns, name    string
	typ         corev1.ServiceType
	class       string
	local       bool
	annotations map[string]string
	ingress     []corev1.LoadBalancerIngress
}

func (s svcSpec) obj() *corev1.Service {
	o := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name, Annotations: s.annotations},
		Spec:       corev1.ServiceSpec{Type: s.typ, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster},
		Status:     corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: s.ingress}},
	}
	if o.Spec.Type == "" {
		o.Spec.Type = corev1.ServiceTypeLoadBalancer
	}
	if s.class != "" {
		o.Spec.LoadBalancerClass = &s.class
	}
	if s.local {
		o.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	}
	return o
}

func ingress(ips ...string) []corev1.LoadBalancerIngress {
	var out []corev1.LoadBalancerIngress
	for _, ip := range ips {
		out = append(out, corev1.LoadBalancerIngress{IP: ip})
	}
	return out
}

// cond builds endpoint conditions; each of ready, serving and terminating
// is "t", "f" or "" for unset.
func cond(ready, serving, terminating string) discoveryv1.EndpointConditions {
	b := func(s string) *bool {
		switch s {
		case "t":
			return new(true)
		case "f":
			return new(false)
		}
		return nil
	}
	return discoveryv1.EndpointConditions{Ready: b(ready), Serving: b(serving), Terminating: b(terminating)}
}

// ep is an endpoint on node ("" for none) with the given conditions.
func ep(node string, c discoveryv1.EndpointConditions) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{"10.244.0.9"}, Conditions: c}
	if node != "" {
		e.NodeName = &node
	}
	return e
}

func slice(ns, name, service string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	o := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
	}
	if service != "" {
		o.Labels = map[string]string{discoveryv1.LabelServiceName: service}
	}
	return o
}

func TestServicesFrom(t *testing.T) {
	ready, notReady := cond("t", "t", "f"), cond("f", "f", "f")
	draining := cond("f", "t", "t")
	tests := []struct {
		desc         string
		svcs         []svcSpec
		slices       []*discoveryv1.EndpointSlice
		want         []snapshot.Service
		wantWarnings []string // substrings, in order
	}{
		{
			desc: "only LoadBalancer Services are kept, sorted by namespace and name",
			svcs: []svcSpec{
				{ns: "b", name: "web", ingress: ingress("192.0.2.1")},
				{ns: "a", name: "z"},
				{ns: "a", name: "cluster-ip", typ: corev1.ServiceTypeClusterIP},
				{ns: "a", name: "node-port", typ: corev1.ServiceTypeNodePort},
				{ns: "a", name: "b"},
			},
			want: []snapshot.Service{
				{Namespace: "a", Name: "b", LoadBalancer: true},
				{Namespace: "a", Name: "z", LoadBalancer: true},
				{Namespace: "b", Name: "web", LoadBalancer: true, Ingress: addrs("192.0.2.1")},
			},
		},
		{
			desc: "spec and status fields",
			svcs: []svcSpec{{
				ns: "a", name: "web", class: "routeagent.io/bgp", local: true,
				annotations: map[string]string{MetalLBPoolAnnotation: "public"},
				ingress: append(ingress("2001:db8::5", "::ffff:192.0.2.7"),
					corev1.LoadBalancerIngress{Hostname: "lb.example.com"}),
			}},
			want: []snapshot.Service{{
				Namespace: "a", Name: "web", LoadBalancer: true, Class: "routeagent.io/bgp",
				ExternalTrafficPolicyLocal: true, Pool: "public",
				Ingress: addrs("2001:db8::5", "192.0.2.7"),
			}},
		},
		{
			desc: "our pool annotation wins over MetalLB's",
			svcs: []svcSpec{{ns: "a", name: "web", annotations: map[string]string{
				MetalLBPoolAnnotation: "old", PoolAnnotation: "new",
			}}},
			want: []snapshot.Service{{Namespace: "a", Name: "web", LoadBalancer: true, Pool: "new"}},
		},
		{
			desc:         "an unparsable ingress IP is skipped with a warning",
			svcs:         []svcSpec{{ns: "a", name: "web", ingress: ingress("192.0.2.300", "192.0.2.3")}},
			want:         []snapshot.Service{{Namespace: "a", Name: "web", LoadBalancer: true, Ingress: addrs("192.0.2.3")}},
			wantWarnings: []string{`service a/web: ignoring status.loadBalancer.ingress[0].ip "192.0.2.300"`},
		},
		{
			desc: "ready endpoints from every slice of the Service, sorted and deduplicated",
			svcs: []svcSpec{{ns: "a", name: "web"}, {ns: "b", name: "web"}},
			slices: []*discoveryv1.EndpointSlice{
				slice("a", "web-1", "web", ep("node-c", ready), ep("node-a", ready), ep("node-d", notReady)),
				slice("a", "web-2", "web", ep("node-a", ready), ep("node-b", cond("", "", ""))),
				// Same name, other namespace; a slice of no Service;
				// another Service's slice.
				slice("b", "web-1", "web", ep("node-x", ready)),
				slice("a", "orphan", "", ep("node-y", ready)),
				slice("a", "api-1", "api", ep("node-z", ready)),
			},
			want: []snapshot.Service{
				{Namespace: "a", Name: "web", LoadBalancer: true, ReadyNodes: []string{"node-a", "node-b", "node-c"}, HasReady: true},
				{Namespace: "b", Name: "web", LoadBalancer: true, ReadyNodes: []string{"node-x"}, HasReady: true},
			},
		},
		{
			desc: "terminating endpoints do not count while another is ready",
			svcs: []svcSpec{{ns: "a", name: "web"}},
			slices: []*discoveryv1.EndpointSlice{
				slice("a", "web-1", "web", ep("node-a", draining), ep("node-b", ready)),
			},
			want: []snapshot.Service{{Namespace: "a", Name: "web", LoadBalancer: true, ReadyNodes: []string{"node-b"}, HasReady: true}},
		},
		{
			desc: "serving terminating endpoints count when none is ready",
			svcs: []svcSpec{{ns: "a", name: "web"}},
			slices: []*discoveryv1.EndpointSlice{
				slice("a", "web-1", "web",
					ep("node-a", draining),
					ep("node-b", cond("f", "f", "t")), // terminating, no longer serving
					ep("node-c", notReady),
					ep("node-d", cond("f", "", "t")), // serving unset counts as serving
				),
			},
			want: []snapshot.Service{{Namespace: "a", Name: "web", LoadBalancer: true, ReadyNodes: []string{"node-a", "node-d"}, HasReady: true}},
		},
		{
			desc: "no ready endpoint",
			svcs: []svcSpec{{ns: "a", name: "web"}},
			slices: []*discoveryv1.EndpointSlice{
				slice("a", "web-1", "web", ep("node-a", notReady), ep("node-b", cond("f", "t", "f"))),
			},
			want: []snapshot.Service{{Namespace: "a", Name: "web", LoadBalancer: true}},
		},
		{
			desc: "a ready endpoint without a node makes the Service ready but names no node",
			svcs: []svcSpec{{ns: "a", name: "web"}},
			slices: []*discoveryv1.EndpointSlice{
				slice("a", "web-1", "web", ep("", ready)),
			},
			want: []snapshot.Service{{Namespace: "a", Name: "web", LoadBalancer: true, HasReady: true}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var objs []*corev1.Service
			for _, s := range tc.svcs {
				objs = append(objs, s.obj())
			}
			got, warnings := servicesFrom(objs, tc.slices)
			if diff := cmp.Diff(tc.want, got, addrCmp); diff != "" {
				t.Errorf("servicesFrom() mismatch (-want +got):\n%s", diff)
			}
			if len(warnings) != len(tc.wantWarnings) {
				t.Fatalf("servicesFrom() warnings = %q, want %d matching %q", warnings, len(tc.wantWarnings), tc.wantWarnings)
			}
			for i := range warnings {
				if !strings.Contains(warnings[i], tc.wantWarnings[i]) {
					t.Errorf("warning %d = %q, want it to contain %q", i, warnings[i], tc.wantWarnings[i])
				}
			}
		})
	}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestDropManagedFields(t *testing.T) {
	o := svcSpec{ns: "a", name: "web"}.obj()
	o.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	got, err := dropManagedFields(o)
	if err != nil {
		t.Fatalf("dropManagedFields: %v", err)
	}
	if mf := got.(*corev1.Service).ManagedFields; mf != nil {
		t.Errorf("managedFields = %v, want none", mf)
	}
}

// The watch publishes a Service's endpoint facts as they change, and
// leaves out Services that are not LoadBalancers.
func TestWatchServices(t *testing.T) {
	web := svcSpec{ns: "shop", name: "web", local: true, ingress: ingress("192.0.2.10")}
	w := startWatch(t, "node-a",
		web.obj(),
		svcSpec{ns: "shop", name: "internal", typ: corev1.ServiceTypeClusterIP}.obj(),
		slice("shop", "web-1", "web", ep("node-a", cond("t", "t", "f"))),
	)
	want := snapshot.Service{
		Namespace: "shop", Name: "web", LoadBalancer: true, ExternalTrafficPolicyLocal: true,
		Ingress: addrs("192.0.2.10"), ReadyNodes: []string{"node-a"}, HasReady: true,
	}
	got := w.waitFor("the web Service", func(s *snapshot.Cluster) bool { return len(s.Services) > 0 })
	if diff := cmp.Diff([]snapshot.Service{want}, got.Services, addrCmp); diff != "" {
		t.Errorf("initial Services mismatch (-want +got):\n%s", diff)
	}

	moved := slice("shop", "web-1", "web", ep("node-b", cond("t", "t", "f")))
	if _, err := w.client.DiscoveryV1().EndpointSlices("shop").Update(context.Background(), moved, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating endpointslice: %v", err)
	}
	got = w.waitFor("the endpoint on node-b", func(s *snapshot.Cluster) bool {
		return len(s.Services) == 1 && slices.Equal(s.Services[0].ReadyNodes, []string{"node-b"})
	})
	want.ReadyNodes = []string{"node-b"}
	if diff := cmp.Diff([]snapshot.Service{want}, got.Services, addrCmp); diff != "" {
		t.Errorf("Services after the move mismatch (-want +got):\n%s", diff)
	}

	// A Node event reuses the Services read before: they stay as they were.
	if _, err := w.client.CoreV1().Nodes().Create(context.Background(), nodeSpec{name: "node-a", rv: "5"}.obj(), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating node: %v", err)
	}
	got = w.waitFor("node-a", func(s *snapshot.Cluster) bool { return s.Self != nil })
	if diff := cmp.Diff([]snapshot.Service{want}, got.Services, addrCmp); diff != "" {
		t.Errorf("Services after a Node event mismatch (-want +got):\n%s", diff)
	}

	if err := w.client.CoreV1().Services("shop").Delete(context.Background(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatalf("deleting service: %v", err)
	}
	w.waitFor("no Service", func(s *snapshot.Cluster) bool { return len(s.Services) == 0 })
}
