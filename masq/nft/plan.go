package nft

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// Config is the masquerade the node wants.
type Config struct {
	// Routable4 and Routable6 are the destinations reached without
	// masquerade; they may overlap.
	Routable4, Routable6 []netip.Prefix
	// NonMasqSources are sources never masqueraded, of either family.
	NonMasqSources []netip.Prefix
	// LocalPods are the node's pod CIDRs, of either family: only their
	// traffic is masqueraded, so none means no masquerade.
	LocalPods []netip.Prefix
	// Devices are the interfaces masqueraded traffic leaves through; a
	// trailing "+" matches every name that starts with what precedes it,
	// as in iptables ("eth+"). None means no masquerade.
	Devices []string
	// PortMin..PortMax is the source port range masqueraded flows get,
	// one the node reserves for it (net.ipv4.ip_local_reserved_ports) so
	// that the mappings never take a port a host socket holds.
	PortMin, PortMax uint16
	// IPv4 and IPv6 say which families are masqueraded; the table of a
	// family that is off is removed.
	IPv4, IPv6 bool
}

// The names of the objects in each family's table.
const (
	chainName  = "postrouting"
	setDevices = "devices"
)

// family holds what differs between the ip and ip6 tables.
type family struct {
	name     string // as nft names the table family
	table    nftables.TableFamily
	keyType  nftables.SetDatatype
	suffix   string // of the address sets' names
	saddrOff uint32 // offsets in the network header
	daddrOff uint32
}

var families = [2]family{
	{name: "ip", table: nftables.TableFamilyIPv4, keyType: nftables.TypeIPAddr, suffix: "4", saddrOff: 12, daddrOff: 16},
	{name: "ip6", table: nftables.TableFamilyIPv6, keyType: nftables.TypeIP6Addr, suffix: "6", saddrOff: 8, daddrOff: 24},
}

func (f family) localPods() string  { return "local_pods" + f.suffix }
func (f family) nonMasqSrc() string { return "nonmasq_src" + f.suffix }
func (f family) routable() string   { return "routable" + f.suffix }

// setNames lists a family's sets in the order they are created.
func (f family) setNames() []string {
	return []string{setDevices, f.localPods(), f.nonMasqSrc(), f.routable()}
}

func (f family) setKeyType(name string) nftables.SetDatatype {
	if name == setDevices {
		return nftables.TypeIFName
	}
	return f.keyType
}

// tableState is what one family's table should hold.
type tableState struct {
	sets  map[string][]span
	rules []rule
}

// rule is one rule of the chain. Its comment names it and ends with a
// hash of its expressions: Set recognises the rules already in place by
// their comments, so a rule whose expressions change gets a new comment
// and is replaced, while the others, and their counters, stay.
type rule struct {
	comment string
	exprs   []expr.Any
}

func (s *tableState) equal(o *tableState) bool {
	if s == nil || o == nil {
		return s == o
	}
	if !slices.EqualFunc(s.rules, o.rules, func(a, b rule) bool { return a.comment == b.comment }) {
		return false
	}
	if len(s.sets) != len(o.sets) {
		return false
	}
	for name, spans := range s.sets {
		other, ok := o.sets[name]
		if !ok || !slices.Equal(spans, other) {
			return false
		}
	}
	return true
}

// desired holds each family's table, nil for a family that is off.
type desired [len(families)]*tableState

func (d desired) equal(o desired) bool {
	for i := range d {
		if !d[i].equal(o[i]) {
			return false
		}
	}
	return true
}

// plan turns a Config into the tables that carry it out.
func plan(c Config) (desired, error) {
	var errs []error
	if c.PortMin == 0 || c.PortMin > c.PortMax {
		errs = append(errs, fmt.Errorf("port range %d-%d: want 1 <= PortMin <= PortMax", c.PortMin, c.PortMax))
	}
	devices := make([]span, 0, len(c.Devices))
	for _, d := range c.Devices {
		s, err := deviceSpan(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		devices = append(devices, s)
	}
	errs = append(errs, checkPrefixes("Routable4", c.Routable4, true, false))
	errs = append(errs, checkPrefixes("Routable6", c.Routable6, false, true))
	errs = append(errs, checkPrefixes("NonMasqSources", c.NonMasqSources, true, true))
	errs = append(errs, checkPrefixes("LocalPods", c.LocalPods, true, true))
	if err := errors.Join(errs...); err != nil {
		return desired{}, err
	}

	var d desired
	for i, f := range families {
		if (i == 0 && !c.IPv4) || (i == 1 && !c.IPv6) {
			continue
		}
		routable := c.Routable4
		if i == 1 {
			routable = c.Routable6
		}
		d[i] = &tableState{
			sets: map[string][]span{
				setDevices:     mergeSpans(devices),
				f.localPods():  familySpans(f, c.LocalPods),
				f.nonMasqSrc(): familySpans(f, c.NonMasqSources),
				f.routable():   familySpans(f, routable),
			},
			rules: chainRules(f, c.PortMin, c.PortMax),
		}
	}
	return d, nil
}

// checkPrefixes refuses invalid prefixes, prefixes with host bits set (as
// ip-masq-agent does: 10.0.0.1/8 is more likely a typo than a wish) and
// prefixes of a family the field does not take.
func checkPrefixes(field string, ps []netip.Prefix, v4, v6 bool) error {
	var errs []error
	for _, p := range ps {
		switch {
		case !p.IsValid():
			errs = append(errs, fmt.Errorf("%s: invalid prefix %v", field, p))
		case p.Masked() != p:
			errs = append(errs, fmt.Errorf("%s: prefix %s is not aligned to a CIDR block (%s)", field, p, p.Masked()))
		case p.Addr().Is4() && !v4:
			errs = append(errs, fmt.Errorf("%s: prefix %s is not IPv6", field, p))
		case !p.Addr().Is4() && !v6:
			errs = append(errs, fmt.Errorf("%s: prefix %s is not IPv4", field, p))
		}
	}
	return errors.Join(errs...)
}

// familySpans collapses the prefixes of family f.
func familySpans(f family, ps []netip.Prefix) []span {
	var spans []span
	for _, p := range ps {
		if p.Addr().Is4() == (f.table == nftables.TableFamilyIPv4) {
			spans = append(spans, prefixSpan(p))
		}
	}
	return mergeSpans(spans)
}

// ifnameLen is IFNAMSIZ: meta oifname loads the name NUL-padded to it.
const ifnameLen = 16

// deviceSpan turns a device name into keys of the devices set: an exact
// name is a span of one key, and "eth+" the span of every name that
// starts with "eth", which is how nft itself stores its "eth*" wildcard
// in an interval set.
func deviceSpan(name string) (span, error) {
	stem, wild := strings.CutSuffix(name, "+")
	switch {
	case name == "":
		return span{}, errors.New("device: empty name")
	case len(stem) >= ifnameLen:
		return span{}, fmt.Errorf("device %q: longer than %d bytes", name, ifnameLen-1)
	case !wild && (name == "." || name == ".."):
		return span{}, fmt.Errorf("device %q: not a valid interface name", name)
	case strings.ContainsAny(stem, "/:+\x00") || strings.ContainsFunc(stem, isSpace):
		return span{}, fmt.Errorf("device %q: not a valid interface name (a \"+\" may only end it)", name)
	}
	pad := ifnameLen - len(stem)
	if !wild {
		k := stem + strings.Repeat("\x00", pad)
		return span{first: k, last: k}, nil
	}
	return span{first: stem + strings.Repeat("\x00", pad), last: stem + strings.Repeat("\xff", pad)}, nil
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f'
}

// chainRules are the rules of a family's postrouting chain. A packet
// that returns early keeps its source; one that reaches the end is
// masqueraded. The checks run cheapest first: most forwarded traffic on a
// node leaves through a device that is not masqueraded (to a local pod,
// into a tunnel) and stops at the first rule.
func chainRules(f family, portMin, portMax uint16) []rule {
	const reg = 1
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	saddr := &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.keyType.Bytes}
	daddr := &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: f.daddrOff, Len: f.keyType.Bytes}
	rules := []rule{
		newRule(f, "not leaving through a masquerade device",
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg},
			&expr.Lookup{SourceRegister: reg, SetName: setDevices, Invert: true},
			ret),
		newRule(f, "not from a pod of this node",
			saddr,
			&expr.Lookup{SourceRegister: reg, SetName: f.localPods(), Invert: true},
			ret),
		newRule(f, "source never masqueraded",
			saddr,
			&expr.Lookup{SourceRegister: reg, SetName: f.nonMasqSrc()},
			ret),
		newRule(f, "destination routable without masquerade",
			daddr,
			&expr.Lookup{SourceRegister: reg, SetName: f.routable()},
			ret),
		// batch.commit adds masqFlags, which the library cannot send
		// along with a port range.
		newRule(f, fmt.Sprintf("masquerade pod egress to ports %d-%d fully-random", portMin, portMax),
			&expr.Counter{},
			&expr.Immediate{Register: reg, Data: binaryutil.BigEndian.PutUint16(portMin)},
			&expr.Immediate{Register: reg + 1, Data: binaryutil.BigEndian.PutUint16(portMax)},
			&expr.Masq{ToPorts: true, RegProtoMin: reg, RegProtoMax: reg + 1}),
	}
	return rules
}

func newRule(f family, what string, exprs ...expr.Any) rule {
	h := fnv.New32a()
	for _, e := range exprs {
		// Marshalling these expressions fails only for unknown kinds,
		// which chainRules does not use.
		b, err := expr.Marshal(byte(f.table), e)
		if err != nil {
			panic(fmt.Sprintf("marshalling %T: %v", e, err))
		}
		h.Write(b)
		h.Write(masqIdentity(e))
	}
	return rule{comment: fmt.Sprintf("%s [%08x]", what, h.Sum32()), exprs: exprs}
}

func ruleComment(r *nftables.Rule) string {
	c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return c
}

func commentData(c string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, c)
}
