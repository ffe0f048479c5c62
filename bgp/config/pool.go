package config

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// pool parses address-pools[i]; ok is false if anything in it was invalid.
func (p *parser) pool(path string, raw json.RawMessage) (Pool, bool) {
	nerrs := len(p.errs)
	o, ok := p.object(path, raw, fields("name", "protocol", "addresses", "auto-assign", "avoid-buggy-ips", "bgp-advertisements"))
	if !ok {
		return Pool{}, false
	}
	pool := Pool{AutoAssign: true}
	if s, ok := o.requiredStr("name"); ok {
		if s == "" {
			p.fail(o.at("name"), "", "must not be empty")
		} else {
			pool.Name = s
			p.poolNames = append(p.poolNames, poolName{path: path, name: s})
		}
	}
	if s, ok := o.requiredStr("protocol"); ok {
		if s == ProtocolBGP || s == ProtocolLayer2 {
			pool.Protocol = s
		} else {
			p.fail(o.at("protocol"), s, "unknown protocol %q (want bgp or layer2)", s)
		}
	}
	desc := "pool " + path // for messages about pools without a valid name
	if pool.Name != "" {
		desc = fmt.Sprintf("pool %q", pool.Name)
	}
	entries := p.addresses(o, desc)
	for _, e := range entries {
		pool.Prefixes = append(pool.Prefixes, e.prefixes...)
	}
	if b, ok := o.boolean("auto-assign"); ok {
		pool.AutoAssign = b
	}
	if b, ok := o.boolean("avoid-buggy-ips"); ok {
		pool.AvoidBuggyIPs = b
	}
	pool.Advertisements = p.advertisements(o, pool.Protocol, entries)
	return pool, len(p.errs) == nerrs
}

func (p *parser) addresses(o *object, pool string) []addrEntry {
	raw, ok := o.required("addresses")
	if !ok {
		return nil
	}
	path := o.at("addresses")
	items, ok := p.list(path, raw)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		p.fail(path, "", "must not be empty")
		return nil
	}
	var entries []addrEntry
	for i, item := range items {
		epath := index(path, i)
		s, ok := p.str(epath, item)
		if !ok {
			continue
		}
		e, err := parseAddresses(s)
		if err != nil {
			p.fail(epath, s, "%v", err)
			continue
		}
		e.path, e.pool = epath, pool
		entries = append(entries, e)
	}
	p.addrs = append(p.addrs, entries...)
	return entries
}

// advertisements parses bgp-advertisements. As in MetalLB, a bgp pool
// without any gets a default one, since a pool that is never announced is
// a mistake rather than a choice.
func (p *parser) advertisements(o *object, protocol string, entries []addrEntry) []Advertisement {
	var items []json.RawMessage
	if raw, ok := o.get("bgp-advertisements"); ok {
		items, _ = p.list(o.at("bgp-advertisements"), raw)
	}
	if protocol == ProtocolLayer2 {
		if len(items) > 0 {
			p.fail(o.at("bgp-advertisements"), protocol, "not allowed for protocol %q", protocol)
		}
		return nil
	}
	if len(items) == 0 {
		if protocol != ProtocolBGP {
			return nil
		}
		return []Advertisement{{AggregationLength: 32, AggregationLengthV6: 128}}
	}
	// Allocated up front: commRefs point into it until the final pass.
	ads := make([]Advertisement, len(items))
	for i, item := range items {
		p.advertisement(index(o.at("bgp-advertisements"), i), item, entries, &ads[i])
	}
	if protocol != ProtocolBGP { // parsed anyway, to report its problems
		return nil
	}
	return ads
}

func (p *parser) advertisement(path string, raw json.RawMessage, entries []addrEntry, ad *Advertisement) {
	*ad = Advertisement{AggregationLength: 32, AggregationLengthV6: 128}
	o, ok := p.object(path, raw, fields("aggregation-length", "aggregation-length-v6", "localpref", "communities"))
	if !ok {
		return
	}
	// aggregation reads an aggregation length; ok is false if it is invalid.
	aggregation := func(field string, max int64, dst *int) bool {
		if _, ok := o.get(field); !ok {
			return true
		}
		n, ok := o.integer(field, 0, max)
		if ok {
			*dst = int(n)
		}
		return ok
	}
	v4OK := aggregation("aggregation-length", 32, &ad.AggregationLength)
	v6OK := aggregation("aggregation-length-v6", 128, &ad.AggregationLengthV6)
	// MetalLB's rule: aggregating to a prefix shorter than a pool's own
	// would announce addresses outside of it.
	for _, e := range entries {
		field, agg, ok := "aggregation-length", ad.AggregationLength, v4OK
		if e.first.Is6() {
			field, agg, ok = "aggregation-length-v6", ad.AggregationLengthV6, v6OK
		}
		if ok && agg < e.minBits() {
			p.fail(o.at(field), strconv.Itoa(agg), "%d is shorter than prefix length %d of %s in this pool", agg, e.minBits(), e)
		}
	}
	if n, ok := o.integer("localpref", 0, math.MaxUint32); ok {
		ad.LocalPref = uint32(n)
	}
	if list, ok := o.strings("communities"); ok {
		for i, s := range list {
			ref := commRef{path: index(o.at("communities"), i), text: s, ad: ad}
			if isCommunityLiteral(s) {
				c, err := parseCommunity(s)
				if err != nil {
					p.fail(ref.path, s, "invalid community %q: %v", s, err)
					continue
				}
				ref.lit, ref.isLiteral = c, true
			}
			p.commRefs = append(p.commRefs, ref)
		}
	}
}
