// Package config reads the ip-masq-agent ConfigMap (key config) in the
// format of kubernetes-sigs/ip-masq-agent, with the Capitalised spellings
// and the NonMasqueradeSrcCIDRs setting of TKE's variant. Parsing is strict:
// unknown keys, wrong types and unaligned CIDRs are errors, and every problem
// in a document is reported at once so that users can fix a config in one
// pass.
package config

import (
	"net/netip"
	"slices"
	"time"
)

// Config is a parsed and validated ip-masq-agent configuration. The zero
// value is the configuration of an empty document: the defaults apply.
type Config struct {
	// NonMasqueradeCIDRs are the destinations that keep the pod's source
	// address, without duplicates, in the order written. They replace the
	// defaults as a whole, for both families: a list of IPv6 CIDRs only
	// leaves no IPv4 destination unmasqueraded but link-local, as in
	// ip-masq-agent. 0.0.0.0/0 leaves every IPv4 destination unmasqueraded.
	NonMasqueradeCIDRs []netip.Prefix
	// CIDRsSet is false when the document lists no CIDRs (the key is
	// absent, empty or null); DefaultNonMasqueradeCIDRs then apply.
	CIDRsSet bool
	// NonMasqueradeSrcCIDRs are pod source ranges whose traffic is never
	// masqueraded, whatever its destination.
	NonMasqueradeSrcCIDRs []netip.Prefix
	// MasqLinkLocal masquerades traffic to LinkLocalIPv4 (by default it is
	// left alone), as cloud metadata services that authenticate the node
	// by its address require.
	MasqLinkLocal bool
	// MasqLinkLocalIPv6 does the same for LinkLocalIPv6.
	MasqLinkLocalIPv6 bool
	// ResyncInterval is zero when not set; callers use
	// DefaultResyncInterval then.
	ResyncInterval time.Duration
}

// DefaultResyncInterval is the resync interval of ip-masq-agent.
const DefaultResyncInterval = time.Minute

// minResyncInterval keeps a typo such as "1ms" from turning the periodic
// resync into a busy loop.
const minResyncInterval = time.Second

// The link-local ranges, left unmasqueraded unless MasqLinkLocal or
// MasqLinkLocalIPv6 says otherwise.
var (
	LinkLocalIPv4 = netip.MustParsePrefix("169.254.0.0/16")
	LinkLocalIPv6 = netip.MustParsePrefix("fe80::/10")
)

// defaultCIDRs are the ranges that Cilium's eBPF ip-masq-agent leaves
// unmasqueraded when the config lists none: RFC 1918 and every other IPv4
// range reserved by an RFC (what ip-masq-agent calls
// --nomasq-all-reserved-ranges). There is no IPv6 default besides
// link-local, as in ip-masq-agent.
var defaultCIDRs = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),      // RFC 1918
	netip.MustParsePrefix("172.16.0.0/12"),   // RFC 1918
	netip.MustParsePrefix("192.168.0.0/16"),  // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),   // RFC 6598, carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // RFC 6890
	netip.MustParsePrefix("192.0.2.0/24"),    // RFC 5737, TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // RFC 7526
	netip.MustParsePrefix("198.18.0.0/15"),   // RFC 2544, benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // RFC 5737, TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // RFC 5737, TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // RFC 1112, former class E
}

// DefaultNonMasqueradeCIDRs returns the destinations left unmasqueraded
// when the config lists no CIDRs. Link-local ranges are not among them:
// they depend on MasqLinkLocal and MasqLinkLocalIPv6, not on the list.
func DefaultNonMasqueradeCIDRs() []netip.Prefix { return slices.Clone(defaultCIDRs) }

// Equal reports whether two configurations are the same. A nil Config
// equals only another nil.
func (c *Config) Equal(o *Config) bool {
	if c == nil || o == nil {
		return c == o
	}
	return slices.Equal(c.NonMasqueradeCIDRs, o.NonMasqueradeCIDRs) && c.CIDRsSet == o.CIDRsSet &&
		slices.Equal(c.NonMasqueradeSrcCIDRs, o.NonMasqueradeSrcCIDRs) &&
		c.MasqLinkLocal == o.MasqLinkLocal && c.MasqLinkLocalIPv6 == o.MasqLinkLocalIPv6 &&
		c.ResyncInterval == o.ResyncInterval
}
