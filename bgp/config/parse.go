package config

import (
	"encoding/json"
	"errors"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Parse parses and validates the config.yaml of a bgp-config ConfigMap.
//
// On failure it returns every problem found, joined with errors.Join; each
// is a *FieldError, except for a YAML syntax error, which stops parsing.
func Parse(data []byte) (*Config, error) {
	// Strict conversion rejects duplicate keys, which plain YAML decoding
	// would silently resolve to the last one.
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	p := &parser{badCommName: map[string]bool{}}
	cfg := p.config(js)
	p.crossCheck(cfg)
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return cfg, nil
}

func (p *parser) config(raw json.RawMessage) *Config {
	cfg := &Config{}
	if kindOf(raw) == kindNull { // empty document
		return cfg
	}
	o, ok := p.object("", raw, fields("peers", "address-pools", "bgp-communities", "bfd-profiles"))
	if !ok {
		return cfg
	}
	p.rejectBFD(o, "bfd-profiles")
	cfg.Communities = p.communities(o)
	if items, ok := o.list("peers"); ok {
		for i, item := range items {
			if peer, ok := p.peer(index("peers", i), i, item); ok {
				cfg.Peers = append(cfg.Peers, peer)
			}
		}
	}
	if items, ok := o.list("address-pools"); ok {
		for i, item := range items {
			if pool, ok := p.pool(index("address-pools", i), item); ok {
				cfg.Pools = append(cfg.Pools, pool)
			}
		}
	}
	return cfg
}

// rejectBFD reports a BFD setting. Empty values are let through since they
// configure nothing, which is what MetalLB does with them too.
func (p *parser) rejectBFD(o *object, field string) {
	raw, ok := o.get(field)
	if !ok || isEmpty(raw) {
		return
	}
	_, value := describe(raw)
	what := field
	if kindOf(raw) == kindString {
		what = fmt.Sprintf("%s %q", field, value)
	}
	p.fail(o.at(field), value, "BFD is not supported by route-agent (remove %s)", what)
}

func (p *parser) communities(o *object) map[string]Community {
	raw, ok := o.get("bgp-communities")
	if !ok {
		return nil
	}
	path := o.at("bgp-communities")
	m, ok := p.mapping(path, raw)
	if !ok {
		return nil
	}
	var out map[string]Community
	for _, name := range sortedKeys(m) {
		epath := key(path, name)
		s, ok := p.str(epath, m[name])
		switch {
		case !ok:
		case name == "":
			p.fail(epath, name, "community name must not be empty")
		case isCommunityLiteral(name):
			p.fail(epath, name, "community name %q must not contain \":\", it would read as a literal community", name)
		default:
			c, err := parseCommunity(s)
			if err != nil {
				p.fail(epath, s, "invalid community %q: %v", s, err)
				break
			}
			if out == nil {
				out = map[string]Community{}
			}
			out[name] = c
			continue
		}
		p.badCommName[name] = true
	}
	return out
}
