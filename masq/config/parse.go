package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"sigs.k8s.io/yaml"
)

// setting is one key of the document. Its first name is ip-masq-agent's
// spelling, the second the Capitalised one that TKE documents; both are
// accepted, but not together.
type setting struct {
	names []string
	parse func(p *parser, cfg *Config, path string, raw json.RawMessage)
}

var settings = []setting{
	{names: []string{"nonMasqueradeCIDRs", "NonMasqueradeCIDRs"}, parse: func(p *parser, cfg *Config, path string, raw json.RawMessage) {
		cfg.NonMasqueradeCIDRs = p.cidrs(path, raw)
		cfg.CIDRsSet = len(cfg.NonMasqueradeCIDRs) > 0
	}},
	{names: []string{"nonMasqueradeSrcCIDRs", "NonMasqueradeSrcCIDRs"}, parse: func(p *parser, cfg *Config, path string, raw json.RawMessage) {
		cfg.NonMasqueradeSrcCIDRs = p.cidrs(path, raw)
	}},
	{names: []string{"masqLinkLocal", "MasqLinkLocal"}, parse: func(p *parser, cfg *Config, path string, raw json.RawMessage) {
		cfg.MasqLinkLocal, _ = p.boolean(path, raw)
	}},
	{names: []string{"masqLinkLocalIPv6", "MasqLinkLocalIPv6"}, parse: func(p *parser, cfg *Config, path string, raw json.RawMessage) {
		cfg.MasqLinkLocalIPv6, _ = p.boolean(path, raw)
	}},
	{names: []string{"resyncInterval", "ResyncInterval"}, parse: func(p *parser, cfg *Config, path string, raw json.RawMessage) {
		cfg.ResyncInterval, _ = p.duration(path, raw)
	}},
}

// unsupported are ip-masq-agent keys that route-agent rejects with a reason
// rather than as unknown.
var unsupported = map[string]string{
	"cidrLimit": "route-agent has no limit on the number of CIDRs",
	"CidrLimit": "route-agent has no limit on the number of CIDRs",
}

// Parse parses and validates the config key of an ip-masq-agent ConfigMap,
// YAML or JSON. An empty document gives the zero Config: the defaults.
//
// On failure it returns every problem found, joined with errors.Join; each
// is a *FieldError, except for a syntax error, which stops parsing.
func Parse(data []byte) (*Config, error) {
	// Strict conversion rejects a key given twice, which plain YAML
	// decoding would silently resolve to the last one.
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML or JSON document: %w", err)
	}
	p := &parser{}
	cfg := p.config(js)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return cfg, nil
}

func (p *parser) config(raw json.RawMessage) *Config {
	cfg := &Config{}
	if kindOf(raw) == kindNull { // empty document, or only comments
		return cfg
	}
	m, ok := p.mapping(raw)
	if !ok {
		return cfg
	}
	var known []string
	for _, s := range settings {
		known = append(known, s.names...)
	}
	for _, k := range sortedKeys(m) {
		if slices.Contains(known, k) {
			continue
		}
		if k == "" {
			p.fail("", "", "a field with an empty name at the top level of the document")
			continue
		}
		if why, ok := unsupported[k]; ok {
			p.fail("", k, "field %q is not supported: %s (remove it)", k, why)
			continue
		}
		msg := fmt.Sprintf("unknown field %q", k)
		if s := suggest(k, known); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		p.fail("", k, "%s", msg)
	}
	for _, s := range settings {
		var present []string
		for _, name := range s.names {
			if _, ok := m[name]; ok {
				present = append(present, name)
			}
		}
		if len(present) > 1 {
			p.fail("", present[1], "%q and %q are two spellings of the same field, keep one", present[0], present[1])
		}
		// Every spelling is checked so that all problems show at once;
		// which one would win does not matter, the document is rejected.
		for _, name := range present {
			if raw := m[name]; kindOf(raw) != kindNull { // "key:" alone counts as absent
				s.parse(p, cfg, name, raw)
			}
		}
	}
	return cfg
}

// cidrs reads a list of CIDRs, dropping duplicates.
func (p *parser) cidrs(path string, raw json.RawMessage) []netip.Prefix {
	items, ok := p.list(path, raw)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for i, item := range items {
		ipath := index(path, i)
		s, ok := p.str(ipath, item)
		if !ok {
			continue
		}
		pfx, err := parseCIDR(s)
		if err != nil {
			p.fail(ipath, s, "%v", err)
			continue
		}
		if !slices.Contains(out, pfx) {
			out = append(out, pfx)
		}
	}
	return out
}

func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" && !a.Is4In6() {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q (did you mean %q?)", s, netip.PrefixFrom(a, a.BitLen()))
		}
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if p.Addr().Is4In6() {
		// The datapath sees IPv4 packets; a mapped prefix would match none.
		if p.Bits() >= 96 {
			v4 := netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
			return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix (did you mean %q?)", s, v4)
		}
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix, write it as IPv4", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %q?", s, m)
	}
	return p, nil
}

func (p *parser) duration(path string, raw json.RawMessage) (time.Duration, bool) {
	const want = `a duration such as "1m0s"`
	if kindOf(raw) != kindString {
		p.typeError(path, want, raw)
		return 0, false
	}
	s, ok := p.str(path, raw)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		p.fail(path, s, "invalid duration %q, want %s", s, want)
	case d < 0:
		p.fail(path, s, "%q is negative", s)
	case d < minResyncInterval:
		p.fail(path, s, "%q is below the minimum %s (omit the field for the default %s)", s, minResyncInterval, DefaultResyncInterval)
	default:
		return d, true
	}
	return 0, false
}
