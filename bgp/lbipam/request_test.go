package lbipam

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"routeagent.io/route-agent/bgp/lbipam/allocator"
)

func TestParseAddrList(t *testing.T) {
	tests := []struct {
		desc    string
		in      string
		want    []netip.Addr
		wantErr string
	}{
		{desc: "empty", in: ""},
		{desc: "blank", in: "  "},
		{desc: "one IPv4", in: "192.0.2.1", want: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
		{desc: "dual-stack with spaces", in: " 2001:db8::1 , 192.0.2.1", want: []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}},
		{desc: "two IPv4", in: "192.0.2.1,192.0.2.2", wantErr: `"192.0.2.1,192.0.2.2": 192.0.2.1 and 192.0.2.2 are of the same family: give at most one address per family`},
		{desc: "empty element", in: "192.0.2.1,", wantErr: `empty address in "192.0.2.1,"`},
		{desc: "not an address", in: "192.0.2.300", wantErr: `"192.0.2.300": invalid IP address "192.0.2.300"`},
		{desc: "CIDR", in: "192.0.2.0/24", wantErr: `"192.0.2.0/24": invalid IP address "192.0.2.0/24"`},
		{desc: "zone", in: "fe80::1%eth0", wantErr: `"fe80::1%eth0": address "fe80::1%eth0" has a zone, which a LoadBalancer address cannot have`},
		{desc: "IPv4-mapped", in: "::ffff:192.0.2.1", wantErr: `"::ffff:192.0.2.1": "::ffff:192.0.2.1" is an IPv4-mapped IPv6 address, write it as IPv4`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := ParseAddrList(tc.in)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("ParseAddrList(%q) error = %v, want %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddrList(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("ParseAddrList(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func FuzzParseAddrList(f *testing.F) {
	for _, s := range []string{"", "192.0.2.1", "2001:db8::1,192.0.2.1", "192.0.2.1,,", "::ffff:1.2.3.4", "fe80::1%lo", "1.2.3.4, 1.2.3.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := ParseAddrList(s)
		if err != nil {
			if addrs != nil {
				t.Fatalf("ParseAddrList(%q) returned %v with error %v", s, addrs, err)
			}
			if !strings.Contains(err.Error(), "\"") {
				t.Fatalf("ParseAddrList(%q) error %q does not quote the value", s, err)
			}
			return
		}
		if len(addrs) > 2 {
			t.Fatalf("ParseAddrList(%q) = %v: more than one address per family", s, addrs)
		}
		if len(addrs) == 2 && addrs[0].Is4() == addrs[1].Is4() {
			t.Fatalf("ParseAddrList(%q) = %v: two addresses of one family", s, addrs)
		}
		for _, a := range addrs {
			if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
				t.Fatalf("ParseAddrList(%q) accepted %v", s, a)
			}
		}
	})
}

func lbService(name string, mutate ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeLoadBalancer,
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports:      []corev1.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}},
			Selector:   map[string]string{"app": name},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

func annotate(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Annotations[k] = v }
}

func TestRequestFor(t *testing.T) {
	v4 := []allocator.Family{allocator.IPv4}
	tcp80 := []allocator.Port{{Protocol: "TCP", Port: 80}}
	tests := []struct {
		desc    string
		svc     *corev1.Service
		want    allocator.Request
		wantErr string
	}{{
		desc: "plain",
		svc:  lbService("a"),
		want: allocator.Request{Families: v4, Ports: tcp80},
	}, {
		desc: "MetalLB pool annotation",
		svc:  lbService("a", annotate(AnnotationPoolMetalLB, "gold")),
		want: allocator.Request{Families: v4, Ports: tcp80, Pool: "gold"},
	}, {
		desc: "own pool annotation",
		svc:  lbService("a", annotate(AnnotationPool, "gold")),
		want: allocator.Request{Families: v4, Ports: tcp80, Pool: "gold"},
	}, {
		desc: "both pool annotations agree",
		svc:  lbService("a", annotate(AnnotationPool, "gold"), annotate(AnnotationPoolMetalLB, "gold")),
		want: allocator.Request{Families: v4, Ports: tcp80, Pool: "gold"},
	}, {
		desc:    "pool annotations disagree",
		svc:     lbService("a", annotate(AnnotationPool, "gold"), annotate(AnnotationPoolMetalLB, "silver")),
		want:    allocator.Request{Families: v4, Ports: tcp80},
		wantErr: `annotations metallb.universe.tf/address-pool "silver" and routeagent.io/address-pool "gold" disagree: set one`,
	}, {
		desc: "spec.loadBalancerIP",
		svc:  lbService("a", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "192.0.2.5" }),
		want: allocator.Request{Families: v4, Ports: tcp80, Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.5")}},
	}, {
		desc:    "bad spec.loadBalancerIP",
		svc:     lbService("a", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "192.0.2.500" }),
		want:    allocator.Request{Families: v4, Ports: tcp80},
		wantErr: `spec.loadBalancerIP "192.0.2.500": invalid IP address "192.0.2.500"`,
	}, {
		desc: "loadBalancerIPs annotation, dual-stack",
		svc: lbService("a", annotate(AnnotationIPsMetalLB, "192.0.2.5,2001:db8::5"), func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		}),
		want: allocator.Request{Families: []allocator.Family{allocator.IPv4, allocator.IPv6}, Ports: tcp80,
			Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.5"), netip.MustParseAddr("2001:db8::5")}},
	}, {
		desc:    "bad own loadBalancerIPs annotation",
		svc:     lbService("a", annotate(AnnotationIPs, "192.0.2.5;192.0.2.6")),
		want:    allocator.Request{Families: v4, Ports: tcp80},
		wantErr: `annotation routeagent.io/loadBalancerIPs: "192.0.2.5;192.0.2.6": invalid IP address "192.0.2.5;192.0.2.6"`,
	}, {
		desc:    "annotation and spec both request",
		svc:     lbService("a", annotate(AnnotationIPs, "192.0.2.5"), func(s *corev1.Service) { s.Spec.LoadBalancerIP = "192.0.2.6" }),
		want:    allocator.Request{Families: v4, Ports: tcp80},
		wantErr: `spec.loadBalancerIP "192.0.2.6" and annotation routeagent.io/loadBalancerIPs "192.0.2.5" both request addresses: set one`,
	}, {
		desc: "sharing with Cluster traffic policy: any backends",
		svc:  lbService("a", annotate(AnnotationSharedMetalLB, "web")),
		want: allocator.Request{Families: v4, Ports: tcp80, SharingKey: "web"},
	}, {
		desc: "sharing with Local traffic policy: the selector is the backend key",
		svc: lbService("a", annotate(AnnotationShared, "web"), func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.Selector = map[string]string{"tier": "front", "app": "web"}
			s.Spec.Ports = []corev1.ServicePort{{Port: 443}, {Protocol: corev1.ProtocolUDP, Port: 443}}
		}),
		want: allocator.Request{Families: v4, SharingKey: "web", BackendKey: "app=web,tier=front",
			Ports: []allocator.Port{{Protocol: "TCP", Port: 443}, {Protocol: "UDP", Port: 443}}},
	}, {
		desc: "RequireDualStack with one family filled in",
		svc: lbService("a", func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
		}),
		want: allocator.Request{Families: []allocator.Family{allocator.IPv6, allocator.IPv4}, Ports: tcp80},
	}, {
		desc: "no ipFamilies: from the cluster IPs",
		svc: lbService("a", func(s *corev1.Service) {
			s.Spec.IPFamilies = nil
			s.Spec.ClusterIPs = []string{"fd00::10"}
		}),
		want: allocator.Request{Families: []allocator.Family{allocator.IPv6}, Ports: tcp80},
	}, {
		desc:    "unknown family",
		svc:     lbService("a", func(s *corev1.Service) { s.Spec.IPFamilies = []corev1.IPFamily{"IPv5"} }),
		want:    allocator.Request{Ports: tcp80},
		wantErr: `spec.ipFamilies[0]: unknown IP family "IPv5"`,
	}}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := RequestFor(tc.svc)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("RequestFor: %v", err)
			}
			if tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Fatalf("RequestFor error = %v, want %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("RequestFor (-want +got):\n%s", diff)
			}
			// The leader's cache holds slim copies: they must ask for
			// exactly what the Service does.
			slim, _ := slimService(tc.svc.DeepCopy())
			slimGot, slimErr := RequestFor(slim.(*corev1.Service))
			if fmt.Sprint(slimErr) != fmt.Sprint(err) {
				t.Errorf("RequestFor(slim copy) error = %v, want %v", slimErr, err)
			}
			if diff := cmp.Diff(got, slimGot, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("RequestFor(slim copy) differs from the Service's (-full +slim):\n%s", diff)
			}
		})
	}
}

func TestStatusPatch(t *testing.T) {
	for _, tc := range []struct {
		addrs []netip.Addr
		want  string
	}{
		{[]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
			`{"metadata":{"resourceVersion":"42"},"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.1"},{"ip":"2001:db8::1"}]}}}`},
		{nil, `{"metadata":{"resourceVersion":"42"},"status":{"loadBalancer":{"ingress":null}}}`},
	} {
		got, err := statusPatch("42", tc.addrs)
		if err != nil || string(got) != tc.want {
			t.Errorf("statusPatch(42, %v) = %s, %v; want %s", tc.addrs, got, err, tc.want)
		}
	}
}

func FuzzRequestFor(f *testing.F) {
	f.Add("", "", "", "", "")
	f.Add("192.0.2.1", "gold", "gold", "web", "")
	f.Add("", "gold", "silver", "", "192.0.2.1,2001:db8::1")
	f.Fuzz(func(t *testing.T, specIP, poolA, poolB, share, ips string) {
		svc := lbService("a", func(s *corev1.Service) { s.Spec.LoadBalancerIP = specIP })
		for k, v := range map[string]string{AnnotationPoolMetalLB: poolA, AnnotationPool: poolB, AnnotationShared: share, AnnotationIPs: ips} {
			if v != "" {
				svc.Annotations[k] = v
			}
		}
		req, err := RequestFor(svc)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if len(req.Families) == 0 {
			t.Fatalf("request without families: %+v", req)
		}
		// Whatever it asks for, the allocator must answer without
		// panicking and never with an address outside the pool.
		a := allocator.New()
		a.SetPools(testPools(t))
		as, _ := a.Assign("ns/a", req)
		for _, x := range as.Addrs {
			if !netip.MustParsePrefix("192.0.2.0/24").Contains(x) && !netip.MustParsePrefix("2001:db8::/64").Contains(x) {
				t.Fatalf("assigned %s outside the pools", x)
			}
		}
	})
}
