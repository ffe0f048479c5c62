package masq

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/masq/config"
)

func TestPlanDesired(t *testing.T) {
	self := snapshot.Node{Name: "a", InternalIPs: []netip.Addr{netip.MustParseAddr("10.4.94.11")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.5.112.0/24")}}
	other := snapshot.Node{Name: "b", InternalIPs: []netip.Addr{netip.MustParseAddr("10.4.83.11")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.5.119.0/24")}}
	cfg, err := config.Parse([]byte("nonMasqueradeCIDRs: [10.0.0.0/8]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &snapshot.Snapshot{Cluster: snapshot.Cluster{NodeName: "a", Self: &self, Nodes: []snapshot.Node{self, other},
		IPMasq: snapshot.IPMasqConfig{Source: "kube-system/ip-masq-agent", Present: true, Config: cfg, AppliedVersion: "3"}}}
	s.Learned = []snapshot.LearnedRoute{
		{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Peer: netip.MustParseAddr("10.4.94.1"), Communities: []string{"64512:100"}},
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Peer: netip.MustParseAddr("10.4.94.1")},
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Peer: netip.MustParseAddr("10.4.94.1"), Communities: []string{"64512:100"}},
	}
	eth0 := Device{Name: "eth0", Index: 2, Addr4: netip.MustParseAddr("10.4.94.11")}
	o := Options{IPv4: true, UseLearned: true, LearnedCommunity: "64512:100", PortMin: 61000, PortMax: 65535,
		NativeRoutingCIDRs: []netip.Prefix{netip.MustParsePrefix("10.5.112.0/21")}}
	d, warnings := PlanDesired(s, o, []Device{eth0})
	if len(warnings) != 0 {
		t.Errorf("warnings %q", warnings)
	}
	got := map[string]string{}
	for _, e := range d.Set.Entries {
		var rs []string
		for _, r := range e.Reasons {
			rs = append(rs, r.String())
		}
		got[e.Prefix.String()] = strings.Join(rs, ", ")
	}
	for prefix, why := range map[string]string{
		"10.0.0.0/8": "config", "10.5.112.0/21": "native-routing", "10.5.119.0/24": "pod-cidr b",
		"10.4.83.11/32": "node b", "203.0.113.0/24": "bgp 10.4.94.1", "169.254.0.0/16": "link-local",
	} {
		if got[prefix] != why {
			t.Errorf("%s: reasons %q, want %q", prefix, got[prefix], why)
		}
	}
	for _, absent := range []string{"192.0.2.0/24", "0.0.0.0/0"} {
		if _, ok := got[absent]; ok {
			t.Errorf("%s in the set: %q", absent, got[absent])
		}
	}
	if !slices.Equal(d.LocalPods, self.PodCIDRs) || d.PortMin != 61000 || d.PortMax != 65535 || !d.IPv4 || d.IPv6 {
		t.Errorf("desired %+v", d)
	}
	again, _ := PlanDesired(s, o, []Device{eth0})
	if !again.Equal(d) {
		t.Error("the same snapshot planned twice differs")
	}

	// A rejected edit keeps the set and says so; no device and no address
	// are warned about.
	s2 := *s
	s2.IPMasq.Err, s2.IPMasq.ErrVersion = errors.New(`nonMasqueradeCIDRs[0]: "10.0.0.1/8" has host bits set`), "4"
	d2, warnings := PlanDesired(&s2, o, []Device{{Name: "eth1", Index: 3}})
	if !d2.Set.Equal(d.Set) {
		t.Error("a rejected edit changed the set")
	}
	joined := strings.Join(warnings, "\n")
	for _, want := range []string{"resourceVersion 4 rejected; resourceVersion 3 stays in force", "device eth1 has no IPv4 address"} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings %q, want one with %q", warnings, want)
		}
	}
	if _, warnings = PlanDesired(&s2, o, nil); !strings.Contains(strings.Join(warnings, "\n"), "no masquerade device") {
		t.Errorf("no device: warnings %q", warnings)
	}
}

func TestSummary(t *testing.T) {
	got := Summary("BPF", []Device{{Name: "eth0"}, {Name: "eth1"}}, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16")})
	if want := "BPF (ip-masq-agent) [eth0, eth1] 10.0.0.0/16"; got != want {
		t.Errorf("Summary = %q, want seed 001's %q", got, want)
	}
}

func TestMatchDevice(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"eth0", "eth0", true}, {"eth0", "eth01", false}, {"eth+", "eth1", true}, {"eth+", "ens3", false},
		{"en*", "ens3", true}, {"bond0", "bond0.100", false},
	} {
		if got := MatchDevice(tc.pattern, tc.name); got != tc.want {
			t.Errorf("MatchDevice(%q, %q) = %v", tc.pattern, tc.name, got)
		}
	}
}
