package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"
)

// On a kernel without Geneve (as here), tunnel mode with Geneve refuses
// to start, naming the missing module and suggesting VXLAN, before it
// touches anything.
func TestGeneveWithoutKernelSupportRefusesToStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("probing the kernel for Geneve needs root")
	}
	if _, err := os.Stat("/sys/module/geneve"); err == nil {
		t.Skip("this kernel has the geneve module")
	}
	err := run(context.Background(), options{nodeName: "n", routingMode: "tunnel", tunnelProtocol: "geneve", logLevel: "info"})
	if err == nil {
		t.Fatal("run succeeded, want a refusal")
	}
	for _, want := range []string{"geneve", "module", "vxlan"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestPlanOptionsRejectBadFlags(t *testing.T) {
	for _, tc := range []struct {
		o    options
		want string
	}{
		{options{routingMode: "overlay"}, `--routing-mode "overlay": want native or tunnel`},
		{options{routingMode: "tunnel", tunnelProtocol: "gre"}, `--tunnel-protocol "gre": want vxlan or geneve`},
		{options{routingMode: "tunnel", tunnelProtocol: "vxlan", tunnelPort: 70000}, `--tunnel-port 70000`},
	} {
		if _, err := tc.o.planOptions(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.o, err, tc.want)
		}
	}
	p, err := options{routingMode: "tunnel", tunnelProtocol: "vxlan", autoDirect: true}.planOptions()
	if err != nil || p.Tunnel == nil || p.Tunnel.Protocol != "vxlan" || !p.AutoDirectNodeRoutes {
		t.Errorf("tunnel vxlan: %+v, %v", p, err)
	}
}

// An empty --bgp-config runs the node without BGP. The LoadBalancer
// allocator's pools are the bgp-config's, so --lb-ipam's default turns
// off with it, and an explicit --lb-ipam=true is refused.
func TestBGPOptions(t *testing.T) {
	for _, tc := range []struct {
		desc       string
		o          options
		wantRef    types.NamespacedName
		wantLBIPAM bool
		wantErr    string
	}{
		{desc: "default", o: options{bgpConfig: "kube-system/bgp-config", lbIPAM: true},
			wantRef: types.NamespacedName{Namespace: "kube-system", Name: "bgp-config"}, wantLBIPAM: true},
		{desc: "another ConfigMap, allocator off", o: options{bgpConfig: "metallb-system/config", lbIPAM: false, lbIPAMSet: true},
			wantRef: types.NamespacedName{Namespace: "metallb-system", Name: "config"}},
		{desc: "no BGP, allocator by default", o: options{lbIPAM: true}},
		{desc: "no BGP, allocator explicitly off", o: options{lbIPAM: false, lbIPAMSet: true}},
		{desc: "no BGP, allocator explicitly on", o: options{lbIPAM: true, lbIPAMSet: true},
			wantErr: `--lb-ipam=true needs a bgp-config, whose address-pools it assigns from: with --bgp-config "" (no BGP) set --lb-ipam=false`},
		{desc: "no namespace", o: options{bgpConfig: "bgp-config", lbIPAM: true}, wantErr: `--bgp-config "bgp-config": want namespace/name, or empty for no BGP`},
		{desc: "empty name", o: options{bgpConfig: "kube-system/", lbIPAM: true}, wantErr: `--bgp-config "kube-system/": want namespace/name`},
		{desc: "empty namespace", o: options{bgpConfig: "/bgp-config", lbIPAM: true}, wantErr: `--bgp-config "/bgp-config": want namespace/name`},
		{desc: "a path", o: options{bgpConfig: "kube-system/bgp/config", lbIPAM: true}, wantErr: `--bgp-config "kube-system/bgp/config": want namespace/name`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ref, lbIPAM, err := tc.o.bgpOptions()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || ref != tc.wantRef || lbIPAM != tc.wantLBIPAM {
				t.Errorf("bgpOptions() = %v, %v, %v; want %v, %v, no error", ref, lbIPAM, err, tc.wantRef, tc.wantLBIPAM)
			}
		})
	}
}

// A flag counts as given on the command line or in the environment, so
// that ROUTE_AGENT_LB_IPAM=true is as explicit as --lb-ipam=true.
func TestGiven(t *testing.T) {
	parse := func(args ...string) *pflag.FlagSet {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		fs.Bool("lb-ipam", true, "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := flagsFromEnv(fs); err != nil {
			t.Fatal(err)
		}
		return fs
	}
	if given(parse(), "lb-ipam") {
		t.Error("a flag left at its default counts as given")
	}
	if !given(parse("--lb-ipam=true"), "lb-ipam") {
		t.Error("--lb-ipam=true on the command line does not count as given")
	}
	t.Setenv("ROUTE_AGENT_LB_IPAM", "true")
	if !given(parse(), "lb-ipam") {
		t.Error("ROUTE_AGENT_LB_IPAM=true does not count as given")
	}
}

// With --bgp-config "" and an explicit --lb-ipam=true the agent refuses to
// start before it touches anything (no kubeconfig is even read).
func TestRunRefusesLBIPAMWithoutBGP(t *testing.T) {
	err := run(context.Background(), options{nodeName: "n", routingMode: "native", logLevel: "info",
		masq: masqFlags{implementation: "bpf", portRange: "61000-65535", natEntries: 65536}, lbIPAM: true, lbIPAMSet: true, kubeconfig: "/nonexistent"})
	if err == nil || !strings.Contains(err.Error(), "--lb-ipam=true needs a bgp-config") {
		t.Errorf("run() = %v, want the --lb-ipam refusal", err)
	}
}
