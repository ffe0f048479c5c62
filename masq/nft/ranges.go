package nft

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Range is the inclusive span of addresses From..To, both of one family.
type Range struct {
	From, To netip.Addr
}

// Prefix returns the prefix that covers exactly r, if there is one.
func (r Range) Prefix() (netip.Prefix, bool) {
	if !r.From.IsValid() || r.From.BitLen() != r.To.BitLen() {
		return netip.Prefix{}, false
	}
	for bits := 0; bits <= r.From.BitLen(); bits++ {
		p := netip.PrefixFrom(r.From, bits)
		if p.Masked() == p && lastAddr(p) == r.To {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (r Range) String() string {
	if p, ok := r.Prefix(); ok {
		return p.String()
	}
	return r.From.String() + "-" + r.To.String()
}

// Collapse returns the addresses the prefixes cover as ranges sorted by
// family and address, none of which overlaps another: nftables refuses an
// interval set whose elements overlap, and the routable set holds both
// 10.0.0.0/8 and the 10.244.1.0/24 inside it. A prefix inside another
// disappears into it; prefixes that merely touch stay apart, so each one
// that no other covers remains an element of its own and `nft list set`
// shows the prefixes as the configuration wrote them. Invalid prefixes are
// left out and host bits are ignored.
func Collapse(prefixes []netip.Prefix) []Range {
	var v4, v6 []span
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		s := prefixSpan(p)
		if p.Addr().Is4() {
			v4 = append(v4, s)
		} else {
			v6 = append(v6, s)
		}
	}
	var out []Range
	for _, spans := range [][]span{v4, v6} {
		for _, s := range mergeSpans(spans) {
			out = append(out, s.addrRange())
		}
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// span is an inclusive interval of set keys in network byte order; first
// and last have the same length, the set's key length. Strings keep spans
// comparable, so they serve as map keys when diffing a set.
type span struct {
	first, last string
}

func prefixSpan(p netip.Prefix) span {
	p = p.Masked()
	return span{first: string(p.Addr().AsSlice()), last: string(lastAddr(p).AsSlice())}
}

func (s span) addrRange() Range {
	from, _ := netip.AddrFromSlice([]byte(s.first))
	to, _ := netip.AddrFromSlice([]byte(s.last))
	return Range{From: from, To: to}
}

// mergeSpans sorts spans of one key length and merges those that overlap.
func mergeSpans(in []span) []span {
	if len(in) == 0 {
		return nil
	}
	s := slices.Clone(in)
	// Among spans starting together the widest comes first, so it absorbs
	// the others.
	slices.SortFunc(s, func(a, b span) int {
		return cmp.Or(strings.Compare(a.first, b.first), strings.Compare(b.last, a.last))
	})
	out := s[:1]
	for _, next := range s[1:] {
		cur := &out[len(out)-1]
		if next.first <= cur.last {
			cur.last = max(cur.last, next.last)
			continue
		}
		out = append(out, next)
	}
	return out
}

// successor returns the key after k, or false when k is the highest key
// of its length.
func successor(k string) (string, bool) {
	b := []byte(k)
	for i := len(b) - 1; i >= 0; i-- {
		b[i]++
		if b[i] != 0 {
			return string(b), true
		}
	}
	return "", false
}

// predecessor returns the key before k, or false when k is all zeroes.
func predecessor(k string) (string, bool) {
	b := []byte(k)
	for i := len(b) - 1; i >= 0; i-- {
		b[i]--
		if b[i] != 0xff {
			return string(b), true
		}
	}
	return "", false
}

// spanElements writes spans the way the kernel's interval sets hold them:
// an element at the first key, and an interval-end element at the key
// after the last one, left out when the span runs to the highest key.
func spanElements(spans []span) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(spans))
	for _, s := range spans {
		out = append(out, nftables.SetElement{Key: []byte(s.first)})
		if end, ok := successor(s.last); ok {
			out = append(out, nftables.SetElement{Key: []byte(end), IntervalEnd: true})
		}
	}
	return out
}

// elementSpans reads back what spanElements wrote. It returns false when
// the elements are not a sequence of starts each followed by its end (a
// set someone else edited), in which case the caller reloads the set
// whole.
func elementSpans(elems []nftables.SetElement, keyLen int) ([]span, bool) {
	type elem struct {
		key string
		end bool
	}
	es := make([]elem, 0, len(elems))
	for _, e := range elems {
		if len(e.Key) != keyLen {
			return nil, false
		}
		es = append(es, elem{string(e.Key), e.IntervalEnd})
	}
	// The kernel dumps in its own order. At an equal key an end sorts
	// first: it closes the span before, which the next one may touch.
	slices.SortFunc(es, func(a, b elem) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		switch {
		case a.end == b.end:
			return 0
		case a.end:
			return -1
		default:
			return 1
		}
	})
	var out []span
	open := ""
	inside := false
	for _, e := range es {
		switch {
		case !e.end && !inside:
			open, inside = e.key, true
		case e.end && inside:
			last, ok := predecessor(e.key)
			if !ok || last < open {
				return nil, false
			}
			out = append(out, span{open, last})
			inside = false
		default:
			return nil, false
		}
	}
	if inside {
		out = append(out, span{open, strings.Repeat("\xff", keyLen)})
	}
	return out, true
}
