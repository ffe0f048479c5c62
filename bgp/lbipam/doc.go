// Package lbipam assigns addresses to Services of type LoadBalancer from
// the address pools of the bgp-config, the way MetalLB v0.12 does, so that
// clusters moving from MetalLB keep their manifests.
//
// # Which Services
//
// Every Service of type LoadBalancer whose spec.loadBalancerClass is unset
// or "routeagent.io/bgp". Services of another class are left to their own
// controller; their status is never touched.
//
// # What a Service can ask for
//
// By default a Service gets the first free address of the first pool, in
// configuration order, whose auto-assign is on; avoid-buggy-ips skips IPv4
// addresses ending in .0 or .255. The annotations below are honoured under
// MetalLB's name (metallb.universe.tf/...) and under the agent's own
// (routeagent.io/...); giving both names different values is an error.
//
//   - address-pool: allocate from this pool only, also one whose
//     auto-assign is off.
//   - loadBalancerIPs: the addresses wanted, comma-separated, one per IP
//     family; spec.loadBalancerIP works too for a single address, but not
//     together with the annotation. A requested address must lie in a pool
//     (in the named one, if a pool is named) and be free or shareable.
//   - allow-shared-ip: a sharing key. Services with the same key may share
//     an address if no two expose the same protocol and port, and, as in
//     MetalLB, if they either all use externalTrafficPolicy Cluster or all
//     select exactly the same pods: with policy Local an address is
//     announced only from nodes running the Service's pods, and one
//     address cannot be announced from two different sets of nodes. A
//     Service with a sharing key joins an address its peers already use
//     when it can, rather than taking a fresh one.
//
// A dual-stack Service (spec.ipFamilies, spec.ipFamilyPolicy) gets one
// address per family, all from one pool, primary family first in
// status.loadBalancer.ingress.
//
// A Service keeps its address while what it asks for still holds. When it
// asks for something else (another pool, another address, another family)
// it moves, keeping the addresses that still fit; if the new request cannot
// be met, it keeps the old address and an Event says why. The address is
// freed when the Service is deleted or stops being a LoadBalancer, and
// then removed from its status.
//
// # Events
//
// Warnings are Events on the Service, one per change of outcome:
//
//   - AllocationFailed: no address could be given, with the cause naming
//     the pool or address: an unknown pool, a pool without addresses of a
//     wanted family, exhausted pools, a requested address outside every
//     pool or held by a Service it may not be shared with, an invalid
//     annotation, or no bgp-config at all.
//   - PoolRemoved: the Service's pool left the configuration. Its address
//     stays assigned until the Service goes; live addresses are never
//     yanked. A pool that comes back takes the address in again.
//   - AddressConflict: the Service was found holding an address that an
//     older Service (by creation time, then namespace/name) also holds and
//     may not share; the older keeps it, this one gets another.
//
// IPAllocated (Normal) reports each address written to the status.
//
// # One allocator at a time
//
// Every agent runs a Controller; they compete for a Lease (by default
// route-agent-lbipam in the agent's namespace) and only the holder
// allocates. On winning, it re-reads every existing assignment from the
// Services' status, straight from the API server, before handing anything
// out, so that no address is given twice across a change of leader or a
// restart. A leader shutting down stops writing before it releases the
// Lease, and the next one takes over within the retry period.
//
// Until the first bgp-config is known nothing is allocated; without a
// bgp-config, Services keep their addresses and new ones wait.
package lbipam
