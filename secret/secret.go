// Package secret holds values that must never reach a log line, an error,
// an Event, a metric or routectl output. A Value prints as "[redacted]"
// however it is formatted, logged or marshalled; only Reveal gives the
// content, so every use of the real value is visible in the code.
package secret

import (
	"fmt"
	"log/slog"
)

// Redacted is what a Value prints as.
const Redacted = "[redacted]"

// Value is a secret string. The zero Value is empty. Values are comparable,
// so structs holding them still diff with ==.
type Value struct{ v string }

// New wraps s.
func New(s string) Value { return Value{v: s} }

// Reveal returns the secret, for the one place that must hand it on (a
// socket option, a peer configuration).
func (v Value) Reveal() string { return v.v }

// IsSet reports whether the secret is non-empty.
func (v Value) IsSet() bool { return v.v != "" }

// Len is the secret's length in bytes, which messages may show.
func (v Value) Len() int { return len(v.v) }

// String implements fmt.Stringer.
func (v Value) String() string {
	if v.v == "" {
		return ""
	}
	return Redacted
}

// GoString keeps %#v from printing the field.
func (v Value) GoString() string { return fmt.Sprintf("secret.Value(%q)", v.String()) }

// Format covers every verb, including %x and %q, which would otherwise
// print the struct's field.
func (v Value) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, v.GoString())
		return
	}
	fmt.Fprint(f, v.String())
}

// LogValue implements slog.LogValuer.
func (v Value) LogValue() slog.Value { return slog.StringValue(v.String()) }

// MarshalText covers encoding/json, YAML and anything else that marshals
// text.
func (v Value) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// Equal reports whether two secrets are the same; go-cmp uses it.
func (v Value) Equal(o Value) bool { return v == o }
