package config

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/validate/content"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"routeagent.io/route-agent/secret"
)

const (
	defaultPort     = 179
	defaultHoldTime = 90 * time.Second
	minHoldTime     = 3 * time.Second // RFC 4271 4.2
	// maxTimer is the largest value of the 16-bit hold time of an OPEN.
	maxTimer = math.MaxUint16 * time.Second
)

// MaxPasswordLen is the Linux TCP_MD5SIG_MAXKEYLEN; longer keys make
// setsockopt fail long after the config was accepted.
const MaxPasswordLen = 80

// peer parses peers[i]; ok is false if anything in it was invalid.
func (p *parser) peer(path string, i int, raw json.RawMessage) (Peer, bool) {
	nerrs := len(p.errs)
	o, ok := p.object(path, raw, fields(
		"peer-address", "peer-asn", "my-asn", "peer-port", "hold-time", "keepalive-time",
		"router-id", "source-address", "ebgp-multihop", "node-selectors",
		"bfd-profile", "password-secret", "dual-stack-address-family",
		"ipv4-next-hop", "ipv6-next-hop").withSecret("password"))
	if !ok {
		return Peer{}, false
	}
	peer := Peer{Index: i, Port: defaultPort}
	p.rejectBFD(o, "bfd-profile")

	if s, ok := o.requiredStr("peer-address"); ok {
		peer.Address, _ = p.unicast(o.at("peer-address"), s)
	}
	if n, ok := o.requiredInteger("peer-asn", 1, math.MaxUint32); ok {
		peer.ASN = uint32(n)
	}
	if n, ok := o.requiredInteger("my-asn", 1, math.MaxUint32); ok {
		peer.MyASN = uint32(n)
	}
	if n, ok := o.integer("peer-port", 1, math.MaxUint16); ok {
		peer.Port = uint16(n)
	}
	p.timers(o, &peer)

	if s, ok := o.str("router-id"); ok {
		rpath := o.at("router-id")
		if a, ok := p.addr(rpath, s); ok {
			switch {
			case !a.Is4():
				p.fail(rpath, s, "%q is not an IPv4 address", s)
			case a.IsUnspecified():
				p.fail(rpath, s, "%q is not a valid router ID", s)
			default:
				peer.RouterID = a
			}
		}
	}
	if s, ok := o.str("source-address"); ok {
		spath := o.at("source-address")
		if a, ok := p.unicast(spath, s); ok {
			if peer.Address.IsValid() && a.Is4() != peer.Address.Is4() {
				p.fail(spath, s, "%q is %s but peer-address %s is %s", s, family(a), peer.Address, family(peer.Address))
			} else {
				peer.SourceAddress = a
			}
		}
	}
	p.password(o, &peer)
	if b, ok := o.boolean("ebgp-multihop"); ok {
		if b && peer.ASN != 0 && peer.ASN == peer.MyASN {
			p.fail(o.at("ebgp-multihop"), "true", "true is only valid for eBGP, but peer-asn and my-asn are both %d", peer.ASN)
		}
		peer.EBGPMultihop = b
	}
	if b, ok := o.boolean("dual-stack-address-family"); ok {
		peer.DualStack = b
	}
	peer.IPv4NextHop = p.nextHop(o, peer, false)
	peer.IPv6NextHop = p.nextHop(o, peer, true)
	if items, ok := o.list("node-selectors"); ok {
		for j, item := range items {
			if sel, ok := p.selector(index(o.at("node-selectors"), j), item); ok {
				peer.NodeSelectors = append(peer.NodeSelectors, sel)
			}
		}
	}
	return peer, len(p.errs) == nerrs
}

// password reads password or password-secret: the key itself, or the
// name of the Secret holding it, which the agent reads from its own
// namespace (as MetalLB's passwordSecret; both at once is an error there
// too).
func (p *parser) password(o *object, peer *Peer) {
	_, hasPassword := o.get("password")
	name, hasSecret := o.str("password-secret")
	if hasPassword && hasSecret {
		p.fail(o.path, "", "password and password-secret are both set; use one of them")
	}
	if s, ok := o.str("password"); ok {
		if len(s) > MaxPasswordLen {
			p.fail(o.at("password"), "", "is %d bytes long, TCP MD5 keys are at most %d", len(s), MaxPasswordLen)
		}
		peer.Password = secret.New(s)
	}
	if !hasSecret {
		return
	}
	if errs := content.IsDNS1123Subdomain(name); len(errs) > 0 {
		p.fail(o.at("password-secret"), name, "invalid Secret name %q: %s", name, strings.Join(errs, "; "))
		return
	}
	peer.PasswordSecret = name
}

// nextHop reads ipv4-next-hop or ipv6-next-hop: a next hop the session's
// paths of that family get instead of the node's own address, as FRR's
// "set ipv6 next-hop global" does. It is only valid for a family the
// session carries.
func (p *parser) nextHop(o *object, peer Peer, ipv6 bool) netip.Addr {
	field, fam := "ipv4-next-hop", "IPv4"
	if ipv6 {
		field, fam = "ipv6-next-hop", "IPv6"
	}
	s, ok := o.str(field)
	if !ok {
		return netip.Addr{}
	}
	path := o.at(field)
	a, ok := p.unicast(path, s)
	switch {
	case !ok:
	case a.Is6() != ipv6:
		p.fail(path, s, "%q is not an %s address", s, fam)
	case a.IsLinkLocalUnicast():
		p.fail(path, s, "%q is link-local; a next hop for other routers must be a global address", s)
	case peer.Address.IsValid() && !peer.Carries(ipv6):
		p.fail(path, s, "%q is a next hop for %s paths, but the session with %s peer-address %s carries %s only (set dual-stack-address-family: true to carry both)",
			s, fam, family(peer.Address), peer.Address, family(peer.Address))
	default:
		return a
	}
	return netip.Addr{}
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// timers sets HoldTime and KeepaliveTime.
func (p *parser) timers(o *object, peer *Peer) {
	peer.HoldTime = defaultHoldTime
	holdOK := true
	if raw, ok := o.get("hold-time"); ok {
		path := o.at("hold-time")
		holdOK = false
		if s, ok := p.str(path, raw); ok {
			if d, ok := p.seconds(path, s); ok {
				switch {
				case d == 0:
					// RFC 4271 allows 0 (no keepalives), but GoBGP reads a
					// zero hold time as "unset" and would use 90s.
					p.fail(path, s, "%q (no keepalives) is not supported; use %s or more", s, secs(minHoldTime))
				case d < minHoldTime:
					p.fail(path, s, "%q is below the minimum %s", s, secs(minHoldTime))
				default:
					peer.HoldTime, holdOK = d, true
				}
			}
		}
	}
	peer.KeepaliveTime = (peer.HoldTime / 3).Truncate(time.Second)

	s, ok := o.str("keepalive-time")
	if !ok {
		return
	}
	path := o.at("keepalive-time")
	d, ok := p.seconds(path, s)
	if !ok {
		return
	}
	peer.KeepaliveTime = d
	if !holdOK {
		return
	}
	switch {
	case d < time.Second:
		// Zero would disable keepalives while the peer expects them.
		p.fail(path, s, "%q is below the minimum 1s", s)
	case d >= peer.HoldTime:
		p.fail(path, s, "%q must be less than hold-time %s", s, secs(peer.HoldTime))
	}
}

// seconds parses a BGP timer: a duration in whole seconds, as carried on the
// wire, that fits in 16 bits.
func (p *parser) seconds(path, s string) (time.Duration, bool) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		p.fail(path, s, "invalid duration %q (want e.g. \"90s\")", s)
	case d < 0:
		p.fail(path, s, "%q is negative", s)
	case d%time.Second != 0:
		p.fail(path, s, "%q is not a whole number of seconds", s)
	case d > maxTimer:
		p.fail(path, s, "%q exceeds the maximum %s", s, secs(maxTimer))
	default:
		return d, true
	}
	return 0, false
}

// secs renders d as "90s" where Duration.String would say "1m30s", to match
// how timers are usually written.
func secs(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// addr parses an IP address. IPv4-mapped IPv6 addresses are unmapped, as
// MetalLB (net.ParseIP) treats them as IPv4.
func (p *parser) addr(path, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		p.fail(path, s, "invalid IP address %q", s)
	case a.Zone() != "":
		p.fail(path, s, "invalid IP address %q: zones are not supported", s)
	default:
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

// unicast parses an address that a BGP session can use.
func (p *parser) unicast(path, s string) (netip.Addr, bool) {
	a, ok := p.addr(path, s)
	if ok && (a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
		p.fail(path, s, "%q is not a unicast address", s)
		return netip.Addr{}, false
	}
	return a, ok
}

// selector parses one node-selectors element. Everything is validated here,
// so that problems are reported with their exact path, before the
// conversion by metav1.LabelSelectorAsSelector.
func (p *parser) selector(path string, raw json.RawMessage) (labels.Selector, bool) {
	nerrs := len(p.errs)
	o, ok := p.object(path, raw, fields("match-labels", "match-expressions"))
	if !ok {
		return nil, false
	}
	var ls metav1.LabelSelector
	if m, ok := o.stringMap("match-labels"); ok {
		mpath := o.at("match-labels")
		for _, k := range sortedKeys(m) {
			p.labelKey(key(mpath, k), k)
			p.labelValue(key(mpath, k), m[k])
		}
		ls.MatchLabels = m
	}
	if items, ok := o.list("match-expressions"); ok {
		for i, item := range items {
			if r, ok := p.requirement(index(o.at("match-expressions"), i), item); ok {
				ls.MatchExpressions = append(ls.MatchExpressions, r)
			}
		}
	}
	if len(p.errs) != nerrs {
		return nil, false
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil {
		p.fail(path, "", "invalid node selector: %v", err)
		return nil, false
	}
	return sel, true
}

func (p *parser) requirement(path string, raw json.RawMessage) (metav1.LabelSelectorRequirement, bool) {
	nerrs := len(p.errs)
	var r metav1.LabelSelectorRequirement
	o, ok := p.object(path, raw, fields("key", "operator", "values"))
	if !ok {
		return r, false
	}
	if k, ok := o.requiredStr("key"); ok {
		p.labelKey(o.at("key"), k)
		r.Key = k
	}
	op, opOK := o.requiredStr("operator")
	operators := []string{
		string(metav1.LabelSelectorOpIn), string(metav1.LabelSelectorOpNotIn),
		string(metav1.LabelSelectorOpExists), string(metav1.LabelSelectorOpDoesNotExist),
	}
	if opOK && !slices.Contains(operators, op) {
		hint := "want In, NotIn, Exists or DoesNotExist"
		if s := suggest(op, operators); s != "" {
			hint = fmt.Sprintf("did you mean %q?", s)
		}
		p.fail(o.at("operator"), op, "unknown operator %q (%s)", op, hint)
		opOK = false
	}
	r.Operator = metav1.LabelSelectorOperator(op)

	_, hasValues := o.get("values")
	values, valuesOK := o.strings("values")
	for i, v := range values {
		p.labelValue(index(o.at("values"), i), v)
	}
	r.Values = values
	if opOK && (valuesOK || !hasValues) {
		vpath := o.at("values")
		switch r.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			if len(values) == 0 {
				p.fail(vpath, "", "must not be empty for operator %s", op)
			}
		default:
			if len(values) > 0 {
				p.fail(vpath, strings.Join(values, ","), "must be empty for operator %s, got %q", op, values)
			}
		}
	}
	return r, len(p.errs) == nerrs
}

func (p *parser) labelKey(path, k string) {
	if errs := content.IsLabelKey(k); len(errs) > 0 {
		p.fail(path, k, "invalid label key %q: %s", k, strings.Join(errs, "; "))
	}
}

func (p *parser) labelValue(path, v string) {
	if errs := content.IsLabelValue(v); len(errs) > 0 {
		p.fail(path, v, "invalid label value %q: %s", v, strings.Join(errs, "; "))
	}
}
