//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Pod egress masquerade (SNAT) for IPv4 on the node's uplink devices.
 * doc.go describes the maps and the design; the comments here explain
 * the steps whose reason is not obvious from the code.
 */
#include "datapath.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/*
 * How many ports a new flow probes before it gives up. The probe is a
 * bounded loop so that the verifier accepts it and so that a full range
 * costs a fixed time per packet instead of a walk of the whole range.
 */
#define NAT_PORT_TRIES 32

/*
 * Last-seen timestamps are written at most this often: a write per packet
 * would bounce the entry's cache line between CPUs for nothing, since the
 * collector works in seconds.
 */
#define REFRESH_NS 1000000000ULL

/* Entry flags. */
#define NAT_F_CLOSING 0x01 /* a FIN or RST was seen: collect sooner */

/* Indexes of snat_stats, mirrored by the stat* constants in Go. */
enum stat {
	STAT_XLATE_EGRESS,
	STAT_XLATE_INGRESS,
	STAT_ICMP_ERROR,
	STAT_SKIP_ROUTABLE,
	STAT_SKIP_NON_MASQ_SRC,
	STAT_NEW_FLOW,
	STAT_DROP_NO_PORT,
	STAT_DROP_UNSUPPORTED,
	STAT_DROP_NO_DEVICE,
	STAT_DROP_ERROR,
	STAT_MAX,
};

/* An address of either family; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d). */
union addr {
	__u8 b[16];
	__be32 w[4];
};

struct lpm_key {
	__u32 prefixlen; /* IPv4 prefixes count the 96 bits of the mapping */
	union addr addr;
};

/*
 * A flow as seen from one side of the NAT: in snat_fwd local is the pod,
 * in snat_rev local is the node address and lport the NAT port. For ICMP
 * echo lport is the identifier and rport is zero.
 */
struct nat_key {
	union addr local;
	union addr remote;
	__be16 lport;
	__be16 rport;
	__u8 proto;
	__u8 pad[3];
};

/* The other side's address and port: NAT address in snat_fwd, pod in snat_rev. */
struct nat_entry {
	union addr addr;
	__u64 seen; /* bpf_ktime_get_ns, CLOCK_MONOTONIC */
	__be16 port;
	__u8 flags;
	__u8 pad[5];
};

/* The source address a masquerade device gives; all zero when unset. */
struct device {
	union addr v4;
	union addr v6;
};

struct config {
	__u16 port_min; /* host order; zero means not configured */
	__u16 port_max;
	__u32 pad;
};

/* Max entries here are defaults: the loader sizes the maps by option. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_key);
	__type(value, struct nat_entry);
	__uint(max_entries, 65536);
} snat_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct nat_key);
	__type(value, struct nat_entry);
	__uint(max_entries, 65536);
} snat_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, __u8);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} snat_local_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, __u8);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} snat_nonmasq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} snat_routable SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex */
	__type(value, struct device);
	__uint(max_entries, 64);
} snat_devices SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct config);
	__uint(max_entries, 1);
} snat_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, STAT_MAX);
} snat_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&snat_stats, &stat);

	if (n)
		*n += 1;
}

static __always_inline void set_v4(union addr *a, __be32 v4)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0x0000ffff);
	a->w[3] = v4;
}

static __always_inline int in_lpm(void *map, __be32 v4)
{
	struct lpm_key k = { .prefixlen = 128 };

	set_v4(&k.addr, v4);
	return bpf_map_lookup_elem(map, &k) != 0;
}

static __always_inline int addr_eq(const union addr *a, const union addr *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] &&
	       a->w[3] == b->w[3];
}

/*
 * Incremental checksum update (RFC 1624, eqn. 3) for checksums that need
 * none of the csum helpers' skb->ip_summed handling: the IP header's,
 * and the quoted headers inside an ICMP error. For the latter the result
 * stays consistent with the sum over the whole ICMP message only when
 * the caller also reports the change of the checksum field itself to
 * the ICMP checksum.
 */
static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

static __always_inline __sum16 csum_update16(__sum16 check, __u16 from, __u16 to)
{
	return (__sum16)~fold((__u16)~check + (__u16)~from + (__u32)to);
}

static __always_inline __sum16 csum_update32(__sum16 check, __u32 from, __u32 to)
{
	check = csum_update16(check, (__u16)from, (__u16)to);
	return csum_update16(check, (__u16)(from >> 16), (__u16)(to >> 16));
}

static __always_inline struct config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&snat_config, &zero);
}

static __always_inline int in_port_range(const struct config *cfg, __be16 port)
{
	__u16 p = bpf_ntohs(port);

	return cfg->port_min && p >= cfg->port_min && p <= cfg->port_max;
}

/*
 * What the L4 header says about a packet. A fragment that is not the
 * first has no L4 header, so it can neither be matched to a flow nor
 * start one.
 */
enum kind {
	KIND_FLOW,       /* TCP, UDP or ICMP echo: ports are known */
	KIND_ICMP_ERROR, /* an ICMP error quoting another packet */
	KIND_OTHER,      /* anything NAT cannot give a port to */
};

struct l4 {
	__u32 off;    /* of the L4 header from skb->data */
	__be16 sport; /* or the ICMP echo identifier */
	__be16 dport; /* zero for ICMP echo */
	__u8 proto;
	__u8 kind;
	__u8 tcp_flags;
	__u8 icmp_type;
};

/*
 * parse4 reads the IPv4 and L4 headers. Headers of GSO or paged packets
 * may not all be in the linear area: pull them in once, then retry.
 * The IPv4 header is left in *ip, copied, since helper calls that write
 * the packet invalidate packet pointers.
 */
static __always_inline int parse4(struct __sk_buff *skb, struct iphdr *ip, struct l4 *l4)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *iph = data + ETH_HLEN;

	if ((void *)(iph + 1) > data_end) {
		if (bpf_skb_pull_data(skb, ETH_HLEN + sizeof(*iph)))
			return -1;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		iph = data + ETH_HLEN;
		if ((void *)(iph + 1) > data_end)
			return -1;
	}
	if (iph->version != 4 || iph->ihl < 5)
		return -1;
	*ip = *iph;
	l4->off = ETH_HLEN + ip->ihl * 4;
	l4->proto = ip->protocol;
	l4->kind = KIND_OTHER;
	l4->sport = 0;
	l4->dport = 0;
	l4->tcp_flags = 0;
	l4->icmp_type = 0;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;

	__u32 need;
	switch (ip->protocol) {
	case IPPROTO_TCP:
		need = sizeof(struct tcphdr);
		break;
	case IPPROTO_UDP:
		need = sizeof(struct udphdr);
		break;
	case IPPROTO_ICMP:
		need = sizeof(struct icmphdr);
		break;
	default:
		return 0;
	}
	if (data + l4->off + need > data_end) {
		if (bpf_skb_pull_data(skb, l4->off + need))
			return 0;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	void *hdr = data + (l4->off & 0xff);
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *th = hdr;

		if ((void *)(th + 1) > data_end)
			return 0;
		l4->sport = th->source;
		l4->dport = th->dest;
		l4->tcp_flags = th->flags;
		l4->kind = KIND_FLOW;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = hdr;

		if ((void *)(uh + 1) > data_end)
			return 0;
		l4->sport = uh->source;
		l4->dport = uh->dest;
		l4->kind = KIND_FLOW;
		break;
	}
	case IPPROTO_ICMP: {
		struct icmphdr *ih = hdr;

		if ((void *)(ih + 1) > data_end)
			return 0;
		l4->icmp_type = ih->type;
		switch (ih->type) {
		case ICMP_ECHO:
		case ICMP_ECHOREPLY:
			l4->sport = ih->id;
			l4->kind = KIND_FLOW;
			break;
		case ICMP_DEST_UNREACH:
		case ICMP_TIME_EXCEEDED:
		case ICMP_PARAMETERPROB:
			l4->kind = KIND_ICMP_ERROR;
			break;
		}
		break;
	}
	}
	return 0;
}

static __always_inline __u32 l4_csum_off(const struct l4 *l4)
{
	switch (l4->proto) {
	case IPPROTO_TCP:
		return l4->off + offsetof(struct tcphdr, check);
	case IPPROTO_UDP:
		return l4->off + offsetof(struct udphdr, check);
	default:
		return l4->off + offsetof(struct icmphdr, checksum);
	}
}

/*
 * rewrite4 replaces one address of the IPv4 header and the matching port
 * (or echo identifier) of the L4 header, keeping every checksum right.
 * The address is part of the TCP/UDP pseudo-header, so its change goes
 * through BPF_F_PSEUDO_HDR: for CHECKSUM_PARTIAL packets (veth, TSO) the
 * checksum field holds only the pseudo-header sum and the helper updates
 * just that, while the port change, in data the device will sum itself,
 * must not be applied there (no BPF_F_PSEUDO_HDR). BPF_F_MARK_MANGLED_0
 * leaves a zero UDP checksum ("none") alone and turns a computed zero
 * into 0xffff. ICMPv4 has no pseudo-header.
 *
 * The IP header checksum is always complete, so the address, port and
 * IP checksum are written directly rather than through helper calls:
 * this is the per-packet path of every established flow. The helpers
 * above may have moved the packet, hence the fresh pointers.
 */
static __always_inline int rewrite4(struct __sk_buff *skb, const struct l4 *l4, int src,
				    __be32 from_addr, __be32 to_addr, __be16 from_port, __be16 to_port)
{
	__u32 port_off = l4->off;
	__u32 csum_off = l4_csum_off(l4);
	__u64 flags = l4->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (l4->proto == IPPROTO_ICMP)
		port_off += offsetof(struct icmphdr, id);
	else if (!src)
		port_off += offsetof(struct udphdr, dest);

	if (l4->proto != IPPROTO_ICMP &&
	    bpf_l4_csum_replace(skb, csum_off, from_addr, to_addr, flags | BPF_F_PSEUDO_HDR | sizeof(to_addr)))
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, from_port, to_port, flags | sizeof(to_port)))
		return -1;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *iph = data + ETH_HLEN;
	__be16 *port = data + (port_off & 0xff);

	if ((void *)(iph + 1) > data_end || (void *)(port + 1) > data_end)
		return -1;
	iph->check = csum_update32(iph->check, from_addr, to_addr);
	if (src)
		iph->saddr = to_addr;
	else
		iph->daddr = to_addr;
	*port = to_port;
	return 0;
}

/* Marks a TCP entry closing on FIN or RST, and open again on a new SYN. */
static __always_inline void track_tcp(struct nat_entry *e, const struct l4 *l4)
{
	if (l4->proto != IPPROTO_TCP)
		return;
	if (l4->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) {
		if (!(e->flags & NAT_F_CLOSING))
			e->flags |= NAT_F_CLOSING;
	} else if ((l4->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN && (e->flags & NAT_F_CLOSING)) {
		e->flags &= ~NAT_F_CLOSING;
	}
}

/*
 * A closed TCP flow's NAT port may go to a new flow to the same remote
 * after this long without a packet. Without it, one pod opening
 * connections to one server in a loop would hold every port of the range
 * until the closed flows are collected, and then find none free.
 */
#define CLOSED_REUSE_NS 1000000000ULL

/*
 * claim takes the reverse entry rkey for the flow whose pod side rval
 * names. Looking up before inserting matters: an insert into a full LRU
 * map evicts an entry before it finds the key already there, so a blind
 * BPF_NOEXIST insert would throw away some other flow. A reverse entry
 * that already names this very pod address and port is ours too: it is
 * what is left of this flow when its forward entry was evicted. A TCP
 * entry closed by both sides, or closing and quiet for CLOSED_REUSE_NS,
 * is taken over, its flow's forward entry dropped so that the old flow
 * cannot use the port.
 */
static __always_inline int claim(struct nat_key *rkey, struct nat_entry *rval)
{
	struct nat_entry *e = bpf_map_lookup_elem(&snat_rev, rkey);

	if (!e) {
		if (!bpf_map_update_elem(&snat_rev, rkey, rval, BPF_NOEXIST))
			return 1;
		e = bpf_map_lookup_elem(&snat_rev, rkey);
		if (!e)
			return 0;
	}
	if (addr_eq(&e->addr, &rval->addr) && e->port == rval->port) {
		/* Ours, refreshed from egress too: a flow the remote half-closed
		 * but the pod still sends on is not quiet. */
		if (rval->seen - e->seen > REFRESH_NS)
			e->seen = rval->seen;
		return 1;
	}
	if (rkey->proto == IPPROTO_TCP && (e->flags & NAT_F_CLOSING)) {
		struct nat_key old = {};
		struct nat_entry *oe;

		old.local = e->addr;
		old.remote = rkey->remote;
		old.lport = e->port;
		old.rport = rkey->rport;
		old.proto = rkey->proto;
		/*
		 * Both sides closed (the pod's FIN or RST on the forward
		 * entry too), or the flow gone quiet since: the port is free,
		 * as the kernel's NAT evicts closing entries on a clash.
		 */
		oe = bpf_map_lookup_elem(&snat_fwd, &old);
		if (oe && !(oe->flags & NAT_F_CLOSING) && rval->seen - e->seen <= CLOSED_REUSE_NS)
			return 0;
		bpf_map_delete_elem(&snat_fwd, &old);
		return !bpf_map_update_elem(&snat_rev, rkey, rval, BPF_EXIST);
	}
	return 0;
}

static __always_inline void rev_key(struct nat_key *rkey, const struct nat_key *fkey,
				    const union addr *nat_addr, __be16 nat_port)
{
	rkey->local = *nat_addr;
	rkey->remote = fkey->remote;
	rkey->lport = nat_port;
	rkey->rport = fkey->rport;
	rkey->proto = fkey->proto;
	rkey->pad[0] = 0;
	rkey->pad[1] = 0;
	rkey->pad[2] = 0;
}

/*
 * nat_new gives the flow fkey a NAT port on node and records both
 * directions. The pod's own port is kept when it is in the range and
 * free; otherwise ports are probed one after the other from a random
 * start, so that concurrent new flows to one remote rarely race for the
 * same port. A port is free when no reverse entry holds it for the same
 * remote address and port: flows to different remotes share ports.
 */
static __always_inline int nat_new(const struct nat_key *fkey, const union addr *node,
				   const struct config *cfg, __u64 now, struct nat_entry *out)
{
	struct nat_key rkey;
	struct nat_entry rval = {};
	__u16 min = cfg->port_min, max = cfg->port_max;
	__u16 port = bpf_ntohs(fkey->lport);
	__u32 size, i;

	if (!min || max < min)
		return -1;
	size = (__u32)max - min + 1;
	if (port < min || port > max)
		port = min + bpf_get_prandom_u32() % size;

	rev_key(&rkey, fkey, node, 0);
	rval.addr = fkey->local;
	rval.port = fkey->lport;
	rval.seen = now;
	for (i = 0; i < NAT_PORT_TRIES && i < size; i++) {
		rkey.lport = bpf_htons(port);
		if (claim(&rkey, &rval))
			goto claimed;
		port = port >= max ? min : port + 1;
	}
	return -1;

claimed:
	out->addr = *node;
	out->port = rkey.lport;
	out->seen = now;
	out->flags = 0;
	if (bpf_map_update_elem(&snat_fwd, fkey, out, BPF_NOEXIST)) {
		/*
		 * Another CPU set up the same flow meanwhile: use its
		 * translation, and give back the port unless it is the one
		 * that CPU chose too.
		 */
		struct nat_entry *e = bpf_map_lookup_elem(&snat_fwd, fkey);

		if (!e || e->port != rkey.lport)
			bpf_map_delete_elem(&snat_rev, &rkey);
		if (!e)
			return -1;
		*out = *e;
	}
	return 0;
}

/*
 * icmp_error4 translates an ICMP error about a translated flow. On
 * ingress the error is addressed to the node about a packet the node
 * (for a pod) sent: the outer destination, the quoted source address
 * and the quoted source port go back to the pod's, so the pod's socket
 * sees the error (traceroute, path MTU discovery). On egress a pod
 * reports a problem with a reply it received: the outer source, the
 * quoted destination and port become the NAT address and port.
 *
 * Every field changed inside the ICMP message (quoted address, port, and
 * the quoted IP and L4 checksums that follow them) is also reported to
 * the ICMP checksum. The quoted L4 checksum covers data the router did
 * not quote, so it can only be updated incrementally, and only when the
 * quote includes it (always for UDP and ICMP, not always for TCP).
 *
 * Returns 1 when translated, 0 when not about a known flow, -1 on error.
 */
static __always_inline int icmp_error4(struct __sk_buff *skb, const struct iphdr *outer,
				       const struct l4 *l4, int ingress)
{
	struct iphdr in;
	__u32 in_off = l4->off + sizeof(struct icmphdr);
	__u32 in_l4;
	__u8 q[8]; /* the quoted L4 header: the 8 bytes a router must quote */
	struct nat_key key = {};
	struct nat_entry *e;
	__be16 sport, dport;
	__u32 port_off, qcsum_off = 0;
	__sum16 qcsum_old = 0;

	if (bpf_skb_load_bytes(skb, in_off, &in, sizeof(in)))
		return 0;
	if (in.version != 4 || in.ihl < 5 || (in.frag_off & bpf_htons(IP_OFFSET)))
		return 0;
	in_l4 = in_off + in.ihl * 4;
	if (bpf_skb_load_bytes(skb, in_l4, q, sizeof(q)))
		return 0;

	switch (in.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		__builtin_memcpy(&sport, &q[0], 2);
		__builtin_memcpy(&dport, &q[2], 2);
		port_off = in_l4 + (ingress ? 0 : 2);
		if (in.protocol == IPPROTO_UDP) {
			qcsum_off = in_l4 + offsetof(struct udphdr, check);
			__builtin_memcpy(&qcsum_old, &q[6], 2);
		} else if (skb->len >= in_l4 + offsetof(struct tcphdr, check) + 2) {
			qcsum_off = in_l4 + offsetof(struct tcphdr, check);
			if (bpf_skb_load_bytes(skb, qcsum_off, &qcsum_old, 2))
				return 0;
		}
		break;
	case IPPROTO_ICMP:
		/* The node sent an echo request; the pod got an echo reply. */
		if (q[0] != (ingress ? ICMP_ECHO : ICMP_ECHOREPLY))
			return 0;
		__builtin_memcpy(&sport, &q[4], 2);
		dport = 0;
		port_off = in_l4 + offsetof(struct icmphdr, id);
		qcsum_off = in_l4 + offsetof(struct icmphdr, checksum);
		__builtin_memcpy(&qcsum_old, &q[2], 2);
		break;
	default:
		return 0;
	}

	__be32 outer_from, outer_to, q_from;
	__be16 qport_from, qport_to;
	__u32 outer_off, qaddr_off;

	key.proto = in.protocol;
	if (ingress) {
		/* Only an error sent to the address the quoted packet came from. */
		if (outer->daddr != in.saddr)
			return 0;
		set_v4(&key.local, in.saddr);
		set_v4(&key.remote, in.daddr);
		key.lport = sport;
		key.rport = dport;
		e = bpf_map_lookup_elem(&snat_rev, &key);
		outer_off = ETH_HLEN + offsetof(struct iphdr, daddr);
		qaddr_off = in_off + offsetof(struct iphdr, saddr);
		q_from = in.saddr;
		qport_from = sport;
	} else {
		if (outer->saddr != in.daddr)
			return 0;
		/* The quoted packet was a reply: its destination is the pod. */
		set_v4(&key.local, in.daddr);
		set_v4(&key.remote, in.saddr);
		if (in.protocol == IPPROTO_ICMP) {
			key.lport = sport;
		} else {
			key.lport = dport;
			key.rport = sport;
		}
		e = bpf_map_lookup_elem(&snat_fwd, &key);
		outer_off = ETH_HLEN + offsetof(struct iphdr, saddr);
		qaddr_off = in_off + offsetof(struct iphdr, daddr);
		q_from = in.daddr;
		qport_from = key.lport;
	}
	if (!e)
		return 0;
	outer_from = q_from;
	outer_to = e->addr.w[3];
	qport_to = e->port;
	if (in.protocol == IPPROTO_ICMP)
		port_off = in_l4 + offsetof(struct icmphdr, id);

	__u32 icmp_csum = l4->off + offsetof(struct icmphdr, checksum);
	__sum16 in_check = csum_update32(in.check, q_from, outer_to);

	/* The outer header: the ICMPv4 checksum does not cover it. */
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), outer_from, outer_to, 4) ||
	    bpf_skb_store_bytes(skb, outer_off, &outer_to, 4, 0))
		return -1;
	/* The quoted IP header, its checksum, then the quoted port. */
	if (bpf_l4_csum_replace(skb, icmp_csum, q_from, outer_to, 4) ||
	    bpf_skb_store_bytes(skb, qaddr_off, &outer_to, 4, 0) ||
	    bpf_l4_csum_replace(skb, icmp_csum, in.check, in_check, 2) ||
	    bpf_skb_store_bytes(skb, in_off + offsetof(struct iphdr, check), &in_check, 2, 0) ||
	    bpf_l4_csum_replace(skb, icmp_csum, qport_from, qport_to, 2) ||
	    bpf_skb_store_bytes(skb, port_off, &qport_to, 2, 0))
		return -1;
	/*
	 * The quoted L4 checksum: TCP and UDP cover the address through the
	 * pseudo-header and the port; a quoted ICMP echo covers only its id.
	 * A zero UDP checksum means none and stays zero.
	 */
	if (qcsum_off && !(in.protocol == IPPROTO_UDP && qcsum_old == 0)) {
		__sum16 qcsum_new = csum_update16(qcsum_old, qport_from, qport_to);

		if (in.protocol != IPPROTO_ICMP)
			qcsum_new = csum_update32(qcsum_new, q_from, outer_to);
		if (in.protocol == IPPROTO_UDP && qcsum_new == 0)
			qcsum_new = 0xffff;
		if (bpf_l4_csum_replace(skb, icmp_csum, qcsum_old, qcsum_new, 2) ||
		    bpf_skb_store_bytes(skb, qcsum_off, &qcsum_new, 2, 0))
			return -1;
	}
	return 1;
}

static __always_inline int egress4(struct __sk_buff *skb)
{
	struct iphdr ip;
	struct l4 l4;
	struct nat_key key = {};
	struct nat_entry *fe, ne;
	__u64 now;
	int ret;

	if (parse4(skb, &ip, &l4))
		return TC_ACT_UNSPEC;
	/* Host traffic leaves untouched and pays only this lookup. */
	if (!in_lpm(&snat_local_pods, ip.saddr))
		return TC_ACT_UNSPEC;

	if (l4.kind == KIND_FLOW) {
		/* Only a request starts an echo flow; a reply is for an inbound ping. */
		if (l4.proto == IPPROTO_ICMP && l4.icmp_type != ICMP_ECHO)
			l4.kind = KIND_OTHER;
	}
	if (l4.kind == KIND_FLOW) {
		/*
		 * Established flows are found before the routable trie is
		 * consulted, so their cost does not grow with its size: the
		 * decision to masquerade was taken by the flow's first packet
		 * (the Go side drops flows that a set change makes wrong).
		 */
		set_v4(&key.local, ip.saddr);
		set_v4(&key.remote, ip.daddr);
		key.lport = l4.sport;
		key.rport = l4.dport;
		key.proto = l4.proto;
		fe = bpf_map_lookup_elem(&snat_fwd, &key);
		if (fe) {
			now = bpf_ktime_get_ns();
			if (now - fe->seen > REFRESH_NS) {
				struct nat_key rkey;
				struct nat_entry rval = {};

				fe->seen = now;
				/*
				 * The two LRU maps evict independently; make sure
				 * the reply path still exists, at most once a
				 * second, and start over if the NAT port went to
				 * another flow meanwhile.
				 */
				rev_key(&rkey, &key, &fe->addr, fe->port);
				rval.addr = key.local;
				rval.port = key.lport;
				rval.seen = now;
				if (!claim(&rkey, &rval)) {
					bpf_map_delete_elem(&snat_fwd, &key);
					goto new_flow;
				}
			}
			track_tcp(fe, &l4);
			ne = *fe;
			goto translate;
		}
	} else if (l4.kind == KIND_ICMP_ERROR) {
		ret = icmp_error4(skb, &ip, &l4, 0);
		if (ret < 0) {
			count(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
		if (ret > 0) {
			count(STAT_ICMP_ERROR);
			return TC_ACT_UNSPEC;
		}
	}

new_flow:
	if (in_lpm(&snat_nonmasq, ip.saddr)) {
		count(STAT_SKIP_NON_MASQ_SRC);
		return TC_ACT_UNSPEC;
	}
	if (in_lpm(&snat_routable, ip.daddr)) {
		count(STAT_SKIP_ROUTABLE);
		return TC_ACT_UNSPEC;
	}
	/*
	 * From here on the packet must be masqueraded. Whatever cannot be
	 * (fragments, protocols without ports, no address or no free port)
	 * is dropped and counted: it never leaves with the pod's address.
	 */
	if (l4.kind != KIND_FLOW) {
		count(STAT_DROP_UNSUPPORTED);
		return TC_ACT_SHOT;
	}
	__u32 ifindex = skb->ifindex;
	struct device *dev = bpf_map_lookup_elem(&snat_devices, &ifindex);
	struct config *cfg = config();

	if (!dev || !dev->v4.w[2] || !cfg) {
		count(STAT_DROP_NO_DEVICE);
		return TC_ACT_SHOT;
	}
	if (nat_new(&key, &dev->v4, cfg, bpf_ktime_get_ns(), &ne)) {
		count(STAT_DROP_NO_PORT);
		return TC_ACT_SHOT;
	}
	count(STAT_NEW_FLOW);

translate:
	if (rewrite4(skb, &l4, 1, ip.saddr, ne.addr.w[3], l4.sport, ne.port)) {
		count(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	count(STAT_XLATE_EGRESS);
	return TC_ACT_UNSPEC;
}

static __always_inline int ingress4(struct __sk_buff *skb)
{
	struct iphdr ip;
	struct l4 l4;
	struct nat_key key = {};
	struct nat_entry *re;
	struct config *cfg;
	__be16 pod_port;
	__be32 pod_addr;
	__u64 now;
	int ret;

	if (parse4(skb, &ip, &l4))
		return TC_ACT_UNSPEC;
	cfg = config();
	if (!cfg)
		return TC_ACT_UNSPEC;

	if (l4.kind == KIND_ICMP_ERROR) {
		ret = icmp_error4(skb, &ip, &l4, 1);
		if (ret < 0) {
			count(STAT_DROP_ERROR);
			return TC_ACT_SHOT;
		}
		if (ret > 0)
			count(STAT_ICMP_ERROR);
		return TC_ACT_UNSPEC;
	}
	if (l4.kind != KIND_FLOW)
		return TC_ACT_UNSPEC;
	if (l4.proto == IPPROTO_ICMP) {
		if (l4.icmp_type != ICMP_ECHOREPLY)
			return TC_ACT_UNSPEC;
		/* The reply's identifier is the NAT port. */
		l4.dport = l4.sport;
		l4.sport = 0;
	}
	/* Replies come to a NAT port; the rest is host traffic, left alone. */
	if (!in_port_range(cfg, l4.dport))
		return TC_ACT_UNSPEC;

	set_v4(&key.local, ip.daddr);
	set_v4(&key.remote, ip.saddr);
	key.lport = l4.dport;
	key.rport = l4.sport;
	key.proto = l4.proto;
	re = bpf_map_lookup_elem(&snat_rev, &key);
	if (!re)
		return TC_ACT_UNSPEC;
	now = bpf_ktime_get_ns();
	if (now - re->seen > REFRESH_NS)
		re->seen = now;
	track_tcp(re, &l4);
	pod_addr = re->addr.w[3];
	pod_port = re->port;

	if (rewrite4(skb, &l4, 0, ip.daddr, pod_addr, l4.dport, pod_port)) {
		count(STAT_DROP_ERROR);
		return TC_ACT_SHOT;
	}
	count(STAT_XLATE_INGRESS);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int snat_egress(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	return egress4(skb);
}

SEC("tc")
int snat_ingress(struct __sk_buff *skb)
{
	if (skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	return ingress4(skb);
}
