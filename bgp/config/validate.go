package config

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Checks that involve more than one object run once the whole document has
// been read, so that they see every object whatever the order in the YAML.

type poolName struct {
	path string // of the pool
	name string
}

// commRef is a community of an advertisement, resolved in the final pass.
type commRef struct {
	path      string
	text      string
	ad        *Advertisement // receives the resolved value
	lit       Community
	isLiteral bool
}

func (p *parser) crossCheck(cfg *Config) {
	p.checkPoolNames()
	p.checkOverlaps()
	p.checkPeers(cfg.Peers)
	p.resolveCommunities(cfg.Communities)
}

func (p *parser) checkPoolNames() {
	first := map[string]string{}
	for _, n := range p.poolNames {
		if path, ok := first[n.name]; ok {
			p.fail(child(n.path, "name"), n.name, "duplicate pool name %q (already used by %s)", n.name, path)
			continue
		}
		first[n.name] = n.path
	}
}

// checkOverlaps reports addresses that are in more than one pool, or twice
// in one, as MetalLB does: an address must belong to exactly one pool.
func (p *parser) checkOverlaps() {
	for j, e := range p.addrs {
		for _, prev := range p.addrs[:j] {
			if e.overlaps(prev) {
				p.fail(e.path, e.text, "%s in %s overlaps with already defined %s in %s", e, e.pool, prev, prev.pool)
			}
		}
	}
}

// checkPeers reports peers that would open the same session twice from a
// node. peers holds only valid peers.
func (p *parser) checkPeers(peers []Peer) {
	first := map[string]int{}
	for _, peer := range peers {
		// Not keyed by port: a speaker holds one session per address.
		k := peer.Address.String() + "\x00" + selectorsKey(peer.NodeSelectors)
		if i, ok := first[k]; ok {
			p.fail(index("peers", peer.Index), peer.Address.String(),
				"peer-address %s with the same node-selectors is already defined by peers[%d]",
				peer.Address, i)
			continue
		}
		first[k] = peer.Index
	}
}

// selectorsKey is equal for selector lists that are identical as sets. A
// selector that matches everything makes the whole list match everything,
// like an empty list.
func selectorsKey(sels []labels.Selector) string {
	strs := make([]string, 0, len(sels))
	for _, s := range sels {
		if s.Empty() {
			return ""
		}
		strs = append(strs, s.String())
	}
	slices.Sort(strs)
	return strings.Join(slices.Compact(strs), "\x00")
}

func (p *parser) resolveCommunities(defined map[string]Community) {
	for _, ref := range p.commRefs {
		c, ok := ref.lit, ref.isLiteral
		if !ok {
			c, ok = defined[ref.text]
		}
		switch {
		case ok:
			if !slices.Contains(ref.ad.Communities, c) {
				ref.ad.Communities = append(ref.ad.Communities, c)
			}
		case p.badCommName[ref.text]:
			// Already reported where it is defined.
		default:
			hint := "not defined in bgp-communities, nor a literal AA:NN"
			if s := suggest(ref.text, sortedKeys(defined)); s != "" {
				hint = fmt.Sprintf("did you mean %q?", s)
			}
			p.fail(ref.path, ref.text, "unknown community %q (%s)", ref.text, hint)
		}
	}
}
