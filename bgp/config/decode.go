package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"routeagent.io/route-agent/secret"
)

// The document is converted to JSON and walked by hand, one mapping at a
// time, rather than decoded into tagged structs: that way every unknown key
// (not just the first) and every wrongly typed value gets reported with its
// exact path, and explicit nulls can be treated as absent like in YAML.

// kind is the JSON type of a value.
type kind int

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindList
	kindMapping
)

func kindOf(raw json.RawMessage) kind {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return kindNull
	}
	switch raw[0] {
	case 'n':
		return kindNull
	case 't', 'f':
		return kindBool
	case '"':
		return kindString
	case '[':
		return kindList
	case '{':
		return kindMapping
	}
	return kindNumber
}

// kindName names raw's type without its content, for secret fields.
func kindName(raw json.RawMessage) string {
	return [...]string{kindNull: "nothing", kindBool: "a boolean", kindNumber: "a number",
		kindString: "a string", kindList: "a list", kindMapping: "a mapping"}[kindOf(raw)]
}

// describe renders raw for "expected X, got Y" messages; value is what goes
// into FieldError.Value.
func describe(raw json.RawMessage) (desc, value string) {
	switch kindOf(raw) {
	case kindNull:
		return "nothing", ""
	case kindBool:
		return "boolean " + string(raw), string(raw)
	case kindNumber:
		return "number " + string(raw), string(raw)
	case kindString:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "a string", ""
		}
		return fmt.Sprintf("string %q", s), s
	case kindList:
		return "a list", abbreviate(raw)
	default:
		return "a mapping", abbreviate(raw)
	}
}

// abbreviate keeps values of the wrong type from flooding messages.
func abbreviate(raw json.RawMessage) string {
	const max = 60
	s := string(raw)
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// parser accumulates every problem found, plus what can only be checked once
// the whole document has been read (see validate.go).
type parser struct {
	errs []error
	// secrets are the paths of secret fields seen so far (see schema).
	secrets []string

	poolNames   []poolName
	addrs       []addrEntry
	commRefs    []commRef
	badCommName map[string]bool // defined in bgp-communities but invalid
}

// fail records a problem at path. At a secret path it drops the value and
// every argument that could carry it (anything but a number), so that no
// message about a secret can ever repeat it, whoever writes the check.
func (p *parser) fail(path, value, format string, args ...any) {
	if p.isSecret(path) {
		value = ""
		args = slices.Clone(args)
		for i, a := range args {
			switch a.(type) {
			case int, int64, uint32, uint64:
			default:
				args[i] = secret.Redacted
			}
		}
	}
	p.errs = append(p.errs, &FieldError{Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) typeError(path, want string, raw json.RawMessage) {
	if p.isSecret(path) {
		// Only the kind, which says nothing of the content.
		p.errs = append(p.errs, &FieldError{Path: path, Msg: "expected " + want + ", got " + kindName(raw)})
		return
	}
	desc, value := describe(raw)
	p.fail(path, value, "expected %s, got %s", want, desc)
}

// isSecret reports whether path is a secret field or lies inside one.
func (p *parser) isSecret(path string) bool {
	for _, s := range p.secrets {
		if path == s || strings.HasPrefix(path, s+"[") || strings.HasPrefix(path, s+".") {
			return true
		}
	}
	return false
}

// schema lists the keys a mapping may hold. Keys marked secret hold values
// that no message may repeat: whatever type or length a user writes there,
// messages name only its path and its kind.
type schema struct {
	keys    []string
	secrets []string
}

func fields(keys ...string) schema { return schema{keys: keys} }

// withSecret adds keys that hold secrets.
func (s schema) withSecret(keys ...string) schema {
	s.keys = append(slices.Clone(s.keys), keys...)
	s.secrets = append(slices.Clone(s.secrets), keys...)
	return s
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// key is the path of a map entry; brackets because label keys and community
// names may contain dots.
func key(path, k string) string { return path + "[" + k + "]" }

func child(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// object is one mapping of a known schema.
type object struct {
	p      *parser
	path   string
	fields map[string]json.RawMessage
}

// object decodes raw as a mapping and reports each key outside the schema.
func (p *parser) object(path string, raw json.RawMessage, sch schema) (*object, bool) {
	m, ok := p.mapping(path, raw)
	if !ok {
		return nil, false
	}
	for _, k := range sch.secrets {
		p.secrets = append(p.secrets, child(path, k))
	}
	known := sch.keys
	for _, k := range sortedKeys(m) {
		if slices.Contains(known, k) {
			continue
		}
		msg := fmt.Sprintf("unknown field %q", k)
		if path == "" {
			msg = fmt.Sprintf("unknown top-level field %q", k)
		}
		if s := suggest(k, known); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		p.fail(path, k, "%s", msg)
	}
	return &object{p: p, path: path, fields: m}, true
}

func (p *parser) mapping(path string, raw json.RawMessage) (map[string]json.RawMessage, bool) {
	if kindOf(raw) != kindMapping {
		want := "a mapping"
		if path == "" {
			want += " at the top level"
		}
		p.typeError(path, want, raw)
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		p.fail(path, "", "invalid mapping: %v", err)
		return nil, false
	}
	return m, true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (o *object) at(field string) string { return child(o.path, field) }

// get returns the value of field. An explicit null ("field:" with nothing
// after it) counts as absent, as it does for YAML users.
func (o *object) get(field string) (json.RawMessage, bool) {
	raw, ok := o.fields[field]
	if !ok || kindOf(raw) == kindNull {
		return nil, false
	}
	return raw, true
}

// required is get that reports a missing field.
func (o *object) required(field string) (json.RawMessage, bool) {
	raw, ok := o.get(field)
	if !ok {
		o.p.fail(o.at(field), "", "missing")
	}
	return raw, ok
}

// The accessors below return ok only for a present, well-typed value;
// type errors are reported.

func (o *object) str(field string) (string, bool) {
	raw, ok := o.get(field)
	if !ok {
		return "", false
	}
	return o.p.str(o.at(field), raw)
}

func (o *object) requiredStr(field string) (string, bool) {
	raw, ok := o.required(field)
	if !ok {
		return "", false
	}
	return o.p.str(o.at(field), raw)
}

func (o *object) boolean(field string) (bool, bool) {
	raw, ok := o.get(field)
	if !ok {
		return false, false
	}
	if kindOf(raw) != kindBool {
		o.p.typeError(o.at(field), "true or false", raw)
		return false, false
	}
	return string(bytes.TrimSpace(raw)) == "true", true
}

// integer reads an integer within [lo, hi].
func (o *object) integer(field string, lo, hi int64) (int64, bool) {
	raw, ok := o.get(field)
	if !ok {
		return 0, false
	}
	return o.p.integer(o.at(field), raw, lo, hi)
}

func (o *object) requiredInteger(field string, lo, hi int64) (int64, bool) {
	raw, ok := o.required(field)
	if !ok {
		return 0, false
	}
	return o.p.integer(o.at(field), raw, lo, hi)
}

func (o *object) list(field string) ([]json.RawMessage, bool) {
	raw, ok := o.get(field)
	if !ok {
		return nil, false
	}
	return o.p.list(o.at(field), raw)
}

// strings reads a list of strings; ok is false if any element is not one.
func (o *object) strings(field string) ([]string, bool) {
	items, ok := o.list(field)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(items))
	for i, item := range items {
		s, ok := o.p.str(index(o.at(field), i), item)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// stringMap reads a mapping of strings; ok is false if any value is not one.
func (o *object) stringMap(field string) (map[string]string, bool) {
	raw, ok := o.get(field)
	if !ok {
		return nil, false
	}
	path := o.at(field)
	m, ok := o.p.mapping(path, raw)
	if !ok {
		return nil, false
	}
	out := make(map[string]string, len(m))
	valid := true
	for _, k := range sortedKeys(m) {
		s, ok := o.p.str(key(path, k), m[k])
		valid = valid && ok
		out[k] = s
	}
	return out, valid
}

func (p *parser) str(path string, raw json.RawMessage) (string, bool) {
	if kindOf(raw) != kindString {
		p.typeError(path, "a string", raw)
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		p.fail(path, "", "invalid string: %v", err)
		return "", false
	}
	return s, true
}

func (p *parser) integer(path string, raw json.RawMessage, lo, hi int64) (int64, bool) {
	if kindOf(raw) != kindNumber {
		p.typeError(path, "an integer", raw)
		return 0, false
	}
	s := string(bytes.TrimSpace(raw))
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		// Too large even for int64, so certainly outside [lo, hi].
	case err != nil:
		p.fail(path, s, "expected an integer, got number %s", s)
		return 0, false
	case lo <= n && n <= hi:
		return n, true
	}
	p.fail(path, s, "%s is out of range %d..%d", s, lo, hi)
	return 0, false
}

func (p *parser) list(path string, raw json.RawMessage) ([]json.RawMessage, bool) {
	if kindOf(raw) != kindList {
		p.typeError(path, "a list", raw)
		return nil, false
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		p.fail(path, "", "invalid list: %v", err)
		return nil, false
	}
	return items, true
}

// isEmpty reports whether raw configures nothing: null, "", [] or {}.
func isEmpty(raw json.RawMessage) bool {
	switch string(bytes.TrimSpace(raw)) {
	case "", "null", `""`, "[]", "{}":
		return true
	}
	return false
}
