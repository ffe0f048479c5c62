package nft

import (
	"net/netip"
	"strings"
)

// IPMasqAgentChain is the chain kubernetes-sigs/ip-masq-agent uses by
// default.
const IPMasqAgentChain = "IP-MASQ-AGENT"

// IPMasqAgentRules renders, as iptables-restore input, the nat rules that
// kubernetes-sigs/ip-masq-agent keeps, for measuring against: masqChain
// (IPMasqAgentChain when empty) returns traffic for each IPv4 prefix of
// cidrs, one rule each in the order given, and masquerades the rest, and
// POSTROUTING jumps to it for every destination that is not local. This is
// the linear chain the nftables interval sets replace. IPv6 prefixes are
// left out, as ip-masq-agent writes those to ip6tables.
//
// Apply it with iptables-restore --noflush: that empties and refills
// masqChain but appends the POSTROUTING rule, once per restore, as
// ip-masq-agent ensures it apart from the restore.
func IPMasqAgentRules(cidrs []netip.Prefix, masqChain string) string {
	if masqChain == "" {
		masqChain = IPMasqAgentChain
	}
	var b strings.Builder
	line := func(words ...string) {
		b.WriteString(strings.Join(words, " "))
		b.WriteByte('\n')
	}
	line("*nat")
	line(":" + masqChain + " - [0:0]")
	for _, p := range cidrs {
		if !p.IsValid() || !p.Addr().Is4() {
			continue
		}
		line("-A", masqChain, `-m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE"`, "-d", p.String(), "-j", "RETURN")
	}
	line("-A", masqChain, `-m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"`, "-j", "MASQUERADE")
	line("-A", "POSTROUTING", `-m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom `+masqChain+` chain"`,
		"-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", masqChain)
	line("COMMIT")
	return b.String()
}
