package main

import (
	"context"
	"os"
	"strings"
	"testing"
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
