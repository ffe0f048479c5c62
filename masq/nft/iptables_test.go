package nft

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestIPMasqAgentRules(t *testing.T) {
	tests := []struct {
		desc  string
		cidrs []string
		chain string
		want  string
	}{
		{
			desc:  "default chain, order kept, IPv6 left out",
			cidrs: []string{"169.254.0.0/16", "10.0.0.0/8", "fd00::/8", "10.244.1.0/24"},
			want: `*nat
:IP-MASQ-AGENT - [0:0]
-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -d 169.254.0.0/16 -j RETURN
-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -d 10.0.0.0/8 -j RETURN
-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -d 10.244.1.0/24 -j RETURN
-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)" -j MASQUERADE
-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT
COMMIT
`,
		},
		{
			desc:  "named chain, no prefixes",
			chain: "BENCH-MASQ",
			want: `*nat
:BENCH-MASQ - [0:0]
-A BENCH-MASQ -m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)" -j MASQUERADE
-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom BENCH-MASQ chain" -m addrtype ! --dst-type LOCAL -j BENCH-MASQ
COMMIT
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var cidrs []netip.Prefix
			for _, c := range tt.cidrs {
				cidrs = append(cidrs, netip.MustParsePrefix(c))
			}
			if diff := cmp.Diff(tt.want, IPMasqAgentRules(cidrs, tt.chain)); diff != "" {
				t.Errorf("IPMasqAgentRules (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIPMasqAgentRulesRestore feeds the rules to iptables-restore in a
// network namespace of its own, made for the command and gone with it.
func TestIPMasqAgentRulesRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace")
	}
	for _, tool := range []string{"iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: %v", tool, err)
		}
	}
	cmd := exec.Command("sh", "-c", "iptables-restore --noflush && iptables-save -t nat")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	cmd.Stdin = strings.NewReader(IPMasqAgentRules(prefixes("10.0.0.0/8", "192.0.2.0/24"), ""))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-restore: %v\n%s", err, out)
	}
	for _, want := range []string{
		`-A IP-MASQ-AGENT -d 10.0.0.0/8 -m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN`,
		`-A IP-MASQ-AGENT -d 192.0.2.0/24 -m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN`,
		`-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)" -j MASQUERADE`,
		`-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain" -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("iptables-save lacks\n%s\nin\n%s", want, out)
		}
	}
}
