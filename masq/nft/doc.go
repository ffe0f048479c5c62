// Package nft masquerades pod egress with nftables, for nodes whose
// kernel cannot run the eBPF datapath. It keeps, over netlink, two tables
// named route-agent (Options.Table), one of family ip and one of ip6,
// each with one chain:
//
//	table ip route-agent {
//		set devices     { type ifname;    flags interval; }
//		set local_pods4 { type ipv4_addr; flags interval; }
//		set nonmasq_src4 { type ipv4_addr; flags interval; }
//		set routable4   { type ipv4_addr; flags interval; }
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			oifname != @devices return
//			ip saddr != @local_pods4 return
//			ip saddr @nonmasq_src4 return
//			ip daddr @routable4 return
//			counter masquerade to :61000-65000 fully-random
//		}
//	}
//
// and the same in table ip6 with the sets named …6. Each rule carries a
// comment naming it.
//
// Why two tables and not one inet table: NAT in the inet family needs
// Linux 5.2, and the kernels this fallback exists for can be older. The
// two tables go through one code path, parameterised by family.
//
// Why priority srcnat (100): it is the slot of source NAT, after the
// routing decision has fixed the output device that the first rule
// tests, and the same as iptables' nat POSTROUTING, so the agent's chain
// and kube-proxy's masquerade rules see packets in the order they were
// registered and the first to translate a connection wins. A packet
// returns (the chain's policy accepts it) unless it is to be
// masqueraded, so whatever other chain is hooked there still sees it.
//
// Why interval sets: the routable set may hold 16,000 prefixes or more.
// A lookup in an interval set is one walk down a tree, while
// ip-masq-agent's chain of one iptables rule per prefix (IPMasqAgentRules
// renders it, for benchmarks) tests them one by one for every new
// connection. Sets also let a change be a few element updates instead of
// a rewritten chain. Every prefix stays an element of its own, so `nft
// list set ip route-agent routable4` shows the configuration.
//
// Why collapse: the kernel refuses interval set elements that overlap,
// and the routable set does overlap (10.0.0.0/8 and the 10.244.1.0/24
// inside it). Collapse drops each prefix that another covers; prefixes
// that only touch stay apart.
//
// Why the tables are never recreated: Set computes the difference with
// what the kernel holds and sends it as one transaction, deleting the set
// elements and rules that left and adding the new ones. Recreating the
// tables would reset the counters routectl shows, and while a family has
// no NAT chain left the kernel unhooks its NAT, so flows already
// masqueraded go untranslated until the chain is back. Rules are recognised by their comments, which end in a hash of
// what the rule does, so only a rule that changes is replaced. A table
// found incompatible (a chain at another hook or priority, a set of
// another type) is the exception: it is rebuilt in the same transaction,
// and the event logged.
//
// A configuration change applies to new connections: netfilter consults
// NAT chains only for a connection's first packet, and established ones
// keep the translation their conntrack entry holds. For the same reason
// the counters count connections, not packets.
package nft
