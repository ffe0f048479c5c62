package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/google/go-cmp/cmp"
)

// seed001 is the example of Cilium's eBPF ip-masq-agent documentation.
const seed001 = `
nonMasqueradeCIDRs:
- 10.0.0.0/8
- 172.16.0.0/12
- 192.168.0.0/16
masqLinkLocal: false
`

// seed002 is the example of TKE's ip-masq-agent documentation.
const seed002 = `
NonMasqueradeCIDRs:
- 192.168.0.0/16
NonMasqueradeSrcCIDRs:
- 10.0.0.0/12
MasqLinkLocal: true
MasqLinkLocalIPv6: false
ResyncInterval: 1m0s
`

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

var cmpOpts = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

type parseTest struct {
	desc  string
	input string
	want  *Config
	// wantErr lists substrings of the error; each names a path and a value.
	wantErr []string
}

var validTests = []parseTest{
	{desc: "empty document", input: "", want: &Config{}},
	{desc: "only a comment", input: "# nothing here\n", want: &Config{}},
	{desc: "empty JSON object", input: "{}", want: &Config{}},
	{desc: "explicit null", input: "null", want: &Config{}},
	{desc: "key without a value", input: "nonMasqueradeCIDRs:\nmasqLinkLocal:\n", want: &Config{}},
	{desc: "empty list means the defaults", input: "nonMasqueradeCIDRs: []\n", want: &Config{}},
	{
		desc:  "seed 001, lowerCamel YAML",
		input: seed001,
		want:  &Config{NonMasqueradeCIDRs: prefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), CIDRsSet: true},
	},
	{
		desc:  "seed 002, Capitalised YAML",
		input: seed002,
		want: &Config{
			NonMasqueradeCIDRs:    prefixes("192.168.0.0/16"),
			CIDRsSet:              true,
			NonMasqueradeSrcCIDRs: prefixes("10.0.0.0/12"),
			MasqLinkLocal:         true,
			ResyncInterval:        time.Minute,
		},
	},
	{
		desc:  "lowerCamel JSON",
		input: `{"nonMasqueradeCIDRs": ["10.0.0.0/16", "fd00::/64"], "nonMasqueradeSrcCIDRs": ["172.16.0.0/16"], "masqLinkLocal": true, "masqLinkLocalIPv6": true, "resyncInterval": "30s"}`,
		want: &Config{
			NonMasqueradeCIDRs:    prefixes("10.0.0.0/16", "fd00::/64"),
			CIDRsSet:              true,
			NonMasqueradeSrcCIDRs: prefixes("172.16.0.0/16"),
			MasqLinkLocal:         true,
			MasqLinkLocalIPv6:     true,
			ResyncInterval:        30 * time.Second,
		},
	},
	{
		desc:  "Capitalised JSON",
		input: `{"NonMasqueradeCIDRs": ["0.0.0.0/0"], "MasqLinkLocal": false, "ResyncInterval": "2m"}`,
		want:  &Config{NonMasqueradeCIDRs: prefixes("0.0.0.0/0"), CIDRsSet: true, ResyncInterval: 2 * time.Minute},
	},
	{
		desc:  "spellings mixed across fields",
		input: "nonMasqueradeCIDRs: [10.0.0.0/8]\nMasqLinkLocal: true\n",
		want:  &Config{NonMasqueradeCIDRs: prefixes("10.0.0.0/8"), CIDRsSet: true, MasqLinkLocal: true},
	},
	{
		desc:  "duplicates are dropped, order kept",
		input: "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16, 10.0.0.0/8, 2001:db8::/32, 2001:db8::/32]\n",
		want:  &Config{NonMasqueradeCIDRs: prefixes("10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"), CIDRsSet: true},
	},
	{
		desc:  "host routes",
		input: "nonMasqueradeCIDRs: [10.1.2.3/32, '2001:db8::1/128']\n",
		want:  &Config{NonMasqueradeCIDRs: prefixes("10.1.2.3/32", "2001:db8::1/128"), CIDRsSet: true},
	},
	{
		desc:  "source CIDRs alone keep the default destinations",
		input: "nonMasqueradeSrcCIDRs: [172.16.0.0/16, 10.16.0.0/16]\n",
		want:  &Config{NonMasqueradeSrcCIDRs: prefixes("172.16.0.0/16", "10.16.0.0/16")},
	},
}

var errorTests = []parseTest{
	// Structure.
	{desc: "syntax", input: "nonMasqueradeCIDRs: [\n", wantErr: []string{"invalid YAML or JSON document"}},
	{desc: "JSON syntax", input: `{"masqLinkLocal": true,`, wantErr: []string{"invalid YAML or JSON document"}},
	{desc: "key given twice", input: "masqLinkLocal: true\nmasqLinkLocal: false\n", wantErr: []string{"invalid YAML or JSON document", `"masqLinkLocal" already set`}},
	{desc: "top level is a list", input: "- 10.0.0.0/8\n", wantErr: []string{"expected a mapping at the top level of the document, got a list"}},
	{desc: "top level is a string", input: "10.0.0.0/8\n", wantErr: []string{`expected a mapping at the top level of the document, got string "10.0.0.0/8"`}},
	{desc: "unknown field", input: "foo: 1\n", wantErr: []string{`unknown field "foo"`}},
	{desc: "typo", input: "masqLinkLocl: true\n", wantErr: []string{`unknown field "masqLinkLocl" (did you mean "masqLinkLocal"?)`}},
	{desc: "wrong case", input: "nonmasqueradecidrs: [10.0.0.0/8]\n", wantErr: []string{`unknown field "nonmasqueradecidrs" (did you mean "nonMasqueradeCIDRs"?)`}},
	{desc: "kebab case", input: "masq-link-local: true\n", wantErr: []string{`unknown field "masq-link-local"`}},
	{desc: "empty field name", input: `{"": true}`, wantErr: []string{"a field with an empty name at the top level of the document"}},
	{desc: "cidrLimit", input: "cidrLimit: 64\n", wantErr: []string{`field "cidrLimit" is not supported: route-agent has no limit on the number of CIDRs`}},
	{
		desc:    "every unknown field is reported",
		input:   "foo: 1\nbar: 2\nmasqLinkLocal: true\n",
		wantErr: []string{`unknown field "bar"`, `unknown field "foo"`},
	},

	// Both spellings.
	{
		desc:    "both spellings of nonMasqueradeCIDRs",
		input:   "nonMasqueradeCIDRs: [10.0.0.0/8]\nNonMasqueradeCIDRs: [10.0.0.0/8]\n",
		wantErr: []string{`"nonMasqueradeCIDRs" and "NonMasqueradeCIDRs" are two spellings of the same field, keep one`},
	},
	{
		desc:    "both spellings of nonMasqueradeSrcCIDRs",
		input:   `{"nonMasqueradeSrcCIDRs": [], "NonMasqueradeSrcCIDRs": []}`,
		wantErr: []string{`"nonMasqueradeSrcCIDRs" and "NonMasqueradeSrcCIDRs" are two spellings`},
	},
	{desc: "both spellings of masqLinkLocal", input: "masqLinkLocal: true\nMasqLinkLocal: true\n", wantErr: []string{`"masqLinkLocal" and "MasqLinkLocal"`}},
	{desc: "both spellings of masqLinkLocalIPv6", input: "masqLinkLocalIPv6:\nMasqLinkLocalIPv6: true\n", wantErr: []string{`"masqLinkLocalIPv6" and "MasqLinkLocalIPv6"`}},
	{desc: "both spellings of resyncInterval", input: "resyncInterval: 1m\nResyncInterval: 1m\n", wantErr: []string{`"resyncInterval" and "ResyncInterval"`}},
	{
		desc:    "both spellings, and a bad value in the second",
		input:   "masqLinkLocal: true\nMasqLinkLocal: 1\n",
		wantErr: []string{`"masqLinkLocal" and "MasqLinkLocal"`, "MasqLinkLocal: expected true or false, got number 1"},
	},

	// CIDRs.
	{desc: "host bits set", input: "nonMasqueradeCIDRs: [10.0.0.1/8]\n", wantErr: []string{`nonMasqueradeCIDRs[0]: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?`}},
	{desc: "IPv6 host bits set", input: "NonMasqueradeCIDRs: ['2001:db8::1/32']\n", wantErr: []string{`NonMasqueradeCIDRs[0]: "2001:db8::1/32" has host bits set; did you mean "2001:db8::/32"?`}},
	{desc: "source host bits set", input: "NonMasqueradeSrcCIDRs: [10.0.0.0/8, 172.16.0.1/12]\n", wantErr: []string{`NonMasqueradeSrcCIDRs[1]: "172.16.0.1/12" has host bits set; did you mean "172.16.0.0/12"?`}},
	{desc: "not a CIDR", input: "nonMasqueradeCIDRs: [private]\n", wantErr: []string{`nonMasqueradeCIDRs[0]: invalid CIDR "private"`}},
	{desc: "address without length", input: "nonMasqueradeCIDRs: [10.0.0.1]\n", wantErr: []string{`nonMasqueradeCIDRs[0]: invalid CIDR "10.0.0.1" (did you mean "10.0.0.1/32"?)`}},
	{desc: "length out of range", input: "nonMasqueradeCIDRs: [10.0.0.0/33]\n", wantErr: []string{`nonMasqueradeCIDRs[0]: invalid CIDR "10.0.0.0/33"`}},
	{desc: "octet out of range", input: "nonMasqueradeCIDRs: [10.0.0.256/32]\n", wantErr: []string{`nonMasqueradeCIDRs[0]: invalid CIDR "10.0.0.256/32"`}},
	{desc: "IPv4-mapped", input: "nonMasqueradeCIDRs: ['::ffff:10.0.0.0/104']\n", wantErr: []string{`nonMasqueradeCIDRs[0]: "::ffff:10.0.0.0/104" is an IPv4-mapped IPv6 prefix (did you mean "10.0.0.0/8"?)`}},
	{desc: "empty string", input: "nonMasqueradeCIDRs: ['']\n", wantErr: []string{`nonMasqueradeCIDRs[0]: invalid CIDR ""`}},
	{
		desc:    "every bad CIDR is reported",
		input:   "nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.1/8, x, 192.168.1.0/16]\n",
		wantErr: []string{`nonMasqueradeCIDRs[1]: "10.0.0.1/8"`, `nonMasqueradeCIDRs[2]: invalid CIDR "x"`, `nonMasqueradeCIDRs[3]: "192.168.1.0/16" has host bits set; did you mean "192.168.0.0/16"?`},
	},

	// Types.
	{desc: "string where a list is expected", input: "nonMasqueradeCIDRs: 10.0.0.0/8\n", wantErr: []string{`nonMasqueradeCIDRs: expected a list, got string "10.0.0.0/8"`}},
	{desc: "mapping where a list is expected", input: "NonMasqueradeSrcCIDRs: {a: b}\n", wantErr: []string{`NonMasqueradeSrcCIDRs: expected a list, got a mapping`}},
	{desc: "number in the list", input: "nonMasqueradeCIDRs: [10]\n", wantErr: []string{"nonMasqueradeCIDRs[0]: expected a string, got number 10"}},
	{desc: "list in the list", input: "nonMasqueradeCIDRs: [[10.0.0.0/8]]\n", wantErr: []string{"nonMasqueradeCIDRs[0]: expected a string, got a list"}},
	{desc: "number where a bool is expected", input: "masqLinkLocal: 1\n", wantErr: []string{"masqLinkLocal: expected true or false, got number 1"}},
	{desc: "quoted bool", input: `{"MasqLinkLocalIPv6": "true"}`, wantErr: []string{`MasqLinkLocalIPv6: expected true or false, got string "true"`}},

	// Durations.
	{desc: "number of seconds", input: "resyncInterval: 60\n", wantErr: []string{`resyncInterval: expected a duration such as "1m0s", got number 60`}},
	{desc: "not a duration", input: "ResyncInterval: one minute\n", wantErr: []string{`ResyncInterval: invalid duration "one minute", want a duration such as "1m0s"`}},
	{desc: "duration without unit", input: "ResyncInterval: '60'\n", wantErr: []string{`ResyncInterval: invalid duration "60"`}},
	{desc: "negative duration", input: "resyncInterval: -1m\n", wantErr: []string{`resyncInterval: "-1m" is negative`}},
	{desc: "zero duration", input: "resyncInterval: 0s\n", wantErr: []string{`resyncInterval: "0s" is below the minimum 1s (omit the field for the default 1m0s)`}},
	{desc: "tiny duration", input: "resyncInterval: 1ms\n", wantErr: []string{`resyncInterval: "1ms" is below the minimum 1s`}},
	{desc: "overflowing duration", input: "resyncInterval: 9999999999h\n", wantErr: []string{`resyncInterval: invalid duration "9999999999h"`}},

	{
		desc: "all problems at once",
		input: `
NonMasqueradeCIDRs: [10.0.0.1/8]
masqLinkLocal: "no"
ResyncInterval: -5s
colour: blue
`,
		wantErr: []string{`unknown field "colour"`, `NonMasqueradeCIDRs[0]: "10.0.0.1/8" has host bits set`, `masqLinkLocal: expected true or false, got string "no"`, `ResyncInterval: "-5s" is negative`},
	},
}

func TestParse(t *testing.T) {
	for _, tc := range append(append([]parseTest{}, validTests...), errorTests...) {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := Parse([]byte(tc.input))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Parse() succeeded with %+v, want error containing %q", got, tc.wantErr)
				}
				for _, want := range tc.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Parse() error does not contain %q; got:\n%v", want, err)
					}
				}
				if got != nil {
					t.Errorf("Parse() returned a config along with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse() failed: %v", err)
			}
			if diff := cmp.Diff(tc.want, got, cmpOpts); diff != "" {
				t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestErrorShape checks what every message must look like: one error per
// problem, each a *FieldError (except syntax errors) that names a field or
// the document, lowercase, without a trailing period, on one line.
func TestErrorShape(t *testing.T) {
	for _, tc := range errorTests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := Parse([]byte(tc.input))
			if err == nil {
				t.Fatal("Parse() succeeded")
			}
			checkErrorShape(t, err)
		})
	}
}

func checkErrorShape(t *testing.T, err error) {
	t.Helper()
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		msg := e.Error()
		if msg == "" {
			t.Fatal("empty error message")
		}
		if r := []rune(msg)[0]; unicode.IsUpper(r) && !isFieldName(msg) {
			t.Errorf("%q is not lowercase", msg)
		}
		if strings.HasPrefix(msg, "invalid YAML or JSON document: ") {
			continue
		}
		if strings.HasSuffix(msg, ".") || strings.Contains(msg, "\n") {
			t.Errorf("%q ends with a period or spans lines", msg)
		}
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Errorf("%q is a %T, want a *FieldError", msg, e)
			continue
		}
		if !namesFieldOrDocument(fe) {
			t.Errorf("%q names neither a field nor the document", msg)
		}
	}
}

// isFieldName reports whether msg starts with a field path, which may be
// Capitalised as the document spells it.
func isFieldName(msg string) bool {
	for _, s := range settings {
		for _, name := range s.names {
			if strings.HasPrefix(msg, name) {
				return true
			}
		}
	}
	return false
}

// namesFieldOrDocument reports whether a message says where its problem
// is: at a path, at a key it quotes, or in the document as a whole.
func namesFieldOrDocument(fe *FieldError) bool {
	return fe.Path != "" || strings.Contains(fe.Msg, "document") ||
		fe.Value != "" && strings.Contains(fe.Msg, fmt.Sprintf("%q", fe.Value))
}

func TestFieldError(t *testing.T) {
	_, err := Parse([]byte("nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.1/8]\n"))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors.As(%v, *FieldError) = false", err)
	}
	want := &FieldError{Path: "nonMasqueradeCIDRs[1]", Value: "10.0.0.1/8", Msg: `"10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?`}
	if diff := cmp.Diff(want, fe); diff != "" {
		t.Errorf("FieldError mismatch (-want +got):\n%s", diff)
	}
	if got, want := fe.Error(), `nonMasqueradeCIDRs[1]: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	top := &FieldError{Value: "x", Msg: `unknown field "x"`}
	if got, want := top.Error(), `unknown field "x"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestDefaults(t *testing.T) {
	want := prefixes("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
		"192.0.2.0/24", "192.88.99.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4")
	got := DefaultNonMasqueradeCIDRs()
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("DefaultNonMasqueradeCIDRs() mismatch (-want +got):\n%s", diff)
	}
	got[0] = netip.MustParsePrefix("1.0.0.0/8")
	if DefaultNonMasqueradeCIDRs()[0] != want[0] {
		t.Error("changing the returned slice changed the defaults")
	}
}

func TestEqual(t *testing.T) {
	base := func() *Config {
		return &Config{NonMasqueradeCIDRs: prefixes("10.0.0.0/8"), CIDRsSet: true, NonMasqueradeSrcCIDRs: prefixes("172.16.0.0/16"), ResyncInterval: time.Minute}
	}
	changes := map[string]func(c *Config){
		"cidrs":        func(c *Config) { c.NonMasqueradeCIDRs = prefixes("10.0.0.0/9") },
		"cidrs set":    func(c *Config) { c.CIDRsSet = false },
		"source cidrs": func(c *Config) { c.NonMasqueradeSrcCIDRs = nil },
		"link-local":   func(c *Config) { c.MasqLinkLocal = true },
		"link-local 6": func(c *Config) { c.MasqLinkLocalIPv6 = true },
		"resync":       func(c *Config) { c.ResyncInterval = time.Second },
	}
	if !base().Equal(base()) {
		t.Error("equal configs compare unequal")
	}
	for name, change := range changes {
		c := base()
		change(c)
		if c.Equal(base()) || base().Equal(c) {
			t.Errorf("configs differing in %s compare equal", name)
		}
	}
	var none *Config
	if !none.Equal(nil) || none.Equal(base()) || base().Equal(nil) {
		t.Error("nil Config compares wrongly")
	}
}
