// Package snat is the eBPF datapath that masquerades pod egress: TC
// programs on the node's uplink devices give pod traffic that leaves the
// cluster's routable space the device's node address and a port from a
// reserved range, and give replies back to the pod before the stack sees
// them.
//
// # Programs
//
// snat_egress runs on egress. A packet from a local pod CIDR, from a
// source outside the non-masquerade CIDRs, to a destination outside the
// routable set, leaves with the device's address and a NAT port. An
// established flow is found in the forward map before the routable set
// is consulted, so its cost does not depend on the size of that set: the
// decision was taken by the flow's first packet, and the Set methods drop
// the flows a change makes wrong. snat_ingress runs on ingress and
// translates replies that match a reverse entry; everything else, host
// traffic included, passes untouched and costs one array lookup (replies
// must come to a port of the range) and at most one hash lookup.
//
// Both handle TCP, UDP and ICMP echo (the identifier is the port), and
// ICMP errors (destination unreachable, fragmentation needed included,
// time exceeded, parameter problem) about translated flows: on ingress
// the outer destination and the quoted source address and port go back
// to the pod's, so traceroute and path MTU discovery work through the
// NAT; on egress a pod's error about a reply it received gets the NAT
// address and port. Checksums are kept right incrementally, for
// CHECKSUM_PARTIAL packets from veths too (see snat.c).
//
// IPv4 only for now: IPv6 packets pass untouched, and SetDevice refuses
// IPv6 addresses. The maps already hold 16-byte addresses (IPv4 as
// IPv4-mapped IPv6) so that IPv6 needs new parsing, not new maps.
//
// # Maps
//
// All maps are pinned by name under Options.PinDir, so that a restart or
// upgrade of the agent keeps flows, configuration and counters. Load
// reuses a pinned map whose type and sizes match and replaces (and logs)
// one that does not. A change of a key or value layout must come with a
// new map name.
//
//   - snat_fwd, LRU hash: {pod addr, remote addr, pod port, remote port,
//     proto} -> {NAT addr, NAT port, last seen, flags}.
//   - snat_rev, LRU hash: {NAT addr, remote addr, NAT port, remote port,
//     proto} -> {pod addr, pod port, last seen, flags}.
//   - snat_local_pods, snat_nonmasq, snat_routable, LPM tries: {prefix
//     length, addr} -> 1; an IPv4 prefix counts the 96 bits of the
//     mapping in its length.
//   - snat_devices, hash: ifindex -> the address the device gives.
//   - snat_config, array: the NAT port range.
//   - snat_stats, per-CPU array: the counters of Stats.
//
// Ports are in network order in keys and values, timestamps are
// CLOCK_MONOTONIC nanoseconds written at most once a second per entry,
// and the flags mark TCP flows that saw a FIN or RST, for a shorter idle
// timeout.
//
// # Ports
//
// A new flow keeps its source port when the port lies in the range and
// no other flow holds it towards the same remote address and port;
// otherwise up to 32 ports are probed in turn from a random start. A
// port is held by inserting the reverse entry with BPF_NOEXIST, which is
// atomic across CPUs. Ports are per remote endpoint, so the range bounds
// concurrent flows to one remote address and port, not flows in all. The
// agent reserves the range from the host (ip_local_reserved_ports), so
// host sockets never collide with NAT ports.
//
// # Why LRU, and what happens when things run out
//
// The NAT maps are LRU hashes: when they fill up, new flows push out the
// least recently used instead of failing, and a datapath that never
// blocks on the agent cannot wait for a collector. GC still drops idle
// flows, by last-seen time and per protocol, so that entries do not
// linger until pressure. The two maps evict independently: an
// established flow checks once a second that its reverse entry is still
// there and restores it. Every egress packet looks up its forward entry,
// which keeps it recent; should it go anyway, the flow's next packet gets
// a port anew and GC collects the orphaned reverse entry.
//
// A packet that must be masqueraded but cannot be (no free port after the
// probes, no address on the device, a fragment, a protocol without ports)
// is dropped and counted in snat_stats: it never leaves with the pod's
// address. Fragments are the notable case: pod traffic to non-routable
// destinations must not rely on IP fragmentation.
//
// # Attaching
//
// Attach uses TCX links (Linux 6.6+): masquerade last among the egress
// programs, reverse translation first on ingress. Links are pinned under
// PinDir/links, so they outlive the agent; Load reopens them and Attach
// swaps the new program in atomically. Where the kernel has no TCX,
// Attach falls back to tc clsact bpf filters at a fixed priority and
// handle, which the kernel keeps without pins and replaces atomically.
package snat
