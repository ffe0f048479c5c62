package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
)

// The document is converted to JSON and walked by hand rather than decoded
// into tagged structs: encoding/json matches keys case-insensitively and
// stops at the first problem, where every unknown key, every key given in
// both spellings and every wrongly typed value must be reported with its
// path.

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

// describe renders raw for "expected X, got Y" messages; value is what goes
// into FieldError.Value.
func describe(raw json.RawMessage) (desc, value string) {
	switch kindOf(raw) {
	case kindNull:
		return "nothing", ""
	case kindBool:
		return "boolean " + string(raw), string(raw)
	case kindNumber:
		return "number " + abbreviate(raw), abbreviate(raw)
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
	s := string(bytes.TrimSpace(raw))
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

// parser accumulates every problem found.
type parser struct {
	errs []error
}

func (p *parser) fail(path, value, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) typeError(path, want string, raw json.RawMessage) {
	desc, value := describe(raw)
	p.fail(path, value, "expected %s, got %s", want, desc)
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func (p *parser) mapping(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	if kindOf(raw) != kindMapping {
		p.typeError("", "a mapping at the top level of the document", raw)
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		p.fail("", "", "invalid document: %v", err)
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

func (p *parser) boolean(path string, raw json.RawMessage) (bool, bool) {
	if kindOf(raw) != kindBool {
		p.typeError(path, "true or false", raw)
		return false, false
	}
	return string(bytes.TrimSpace(raw)) == "true", true
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
