// Package masq decides which destinations pod traffic reaches with its own
// source address: the routable set, which the eBPF datapath leaves alone
// while it masquerades everything else behind the node's address. Plan is
// pure; its Set is what `routectl ipmasq list` shows and what the datapath's
// longest-prefix-match map holds. Package config reads the ip-masq-agent
// ConfigMap that drives part of it.
//
// # Which prefixes
//
// A destination is left unmasqueraded when it falls in any of:
//
//   - the nonMasqueradeCIDRs of the ip-masq-agent config, or, when it lists
//     none, config.DefaultNonMasqueradeCIDRs (RFC 1918 and the other
//     reserved IPv4 ranges). A configured list replaces the defaults, as in
//     ip-masq-agent, rather than adding to them;
//   - 169.254.0.0/16 unless masqLinkLocal is true, and fe80::/10 unless
//     masqLinkLocalIPv6 is true, whether or not CIDRs are configured;
//   - the native routing CIDRs, the ranges the operator declares routable
//     without NAT;
//   - every node's pod CIDRs, so that pod-to-pod traffic always keeps its
//     source;
//   - every node's addresses, as /32 or /128, so that pod-to-node traffic
//     keeps its source too;
//   - with UseLearned, the prefixes learned from BGP peers, optionally only
//     those tagged with one community.
//
// 0.0.0.0/0 in nonMasqueradeCIDRs needs no special case: it matches every
// IPv4 destination, so no IPv4 traffic is masqueraded (TKE documents this
// for VPC-CNI clusters). IPv6 is unaffected; ::/0 does the same for it.
//
// Prefixes are never merged or aggregated. Overlaps cost nothing in a
// longest-prefix-match map, and users want to see each prefix with the
// reasons it is there; a prefix given for several reasons appears once
// with all of them.
//
// # Learned routes
//
// The nodes advertise their pod CIDRs to the fabric. A prefix the fabric
// advertises back is one whose hosts can route to pod addresses, so their
// replies find the pod without NAT: following the learned routes keeps the
// set tied to what is actually routable, with no list to maintain by hand
// when a rack or a VPC range is added. A community lets the operator mark
// which learned routes count, when some lead to networks that cannot reach
// the pods.
//
// A learned default route (0.0.0.0/0, ::/0) is never included, whatever
// its communities. It would match every destination and silently turn off
// masquerading for the internet too, which cannot route pod addresses back;
// and a default route is the one an upstream router sends for reasons of
// its own. An operator who really wants no masquerading at all says so in
// nonMasqueradeCIDRs, where it is visible.
//
// # Sources
//
// The config's nonMasqueradeSrcCIDRs (TKE's NonMasqueradeSrcCIDRs) are
// pod source ranges that are never masqueraded, whatever the destination:
// Set.NonMasqSources.
package masq
