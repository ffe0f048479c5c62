// Package helm_test checks the route-agent chart against its documentation
// and against the agent: every value in docs/install.md's table lands on
// the flag or ConfigMap key the table names, every value of values.yaml is
// in the table, every flag the chart renders is one the agent has, and the
// RBAC, capabilities and mounts follow what is enabled.
//
// It runs helm (scripts/install-deps installs it): $HELM, else helm from
// $PATH; without either it skips, unless $HELM was set.
package helm_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	masqconfig "routeagent.io/route-agent/masq/config"
)

const (
	chartDir  = "route-agent"
	namespace = "route-agent-test"
	docsPath  = "../../docs/install.md"
)

// object is one rendered manifest.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }

func (o object) name() string {
	m, _ := o["metadata"].(map[string]any)
	s, _ := m["name"].(string)
	return s
}

// rendered is `helm template`'s output.
type rendered []object

func (r rendered) find(kind, name string) object {
	for _, o := range r {
		if o.kind() == kind && (name == "" || o.name() == name) {
			return o
		}
	}
	return nil
}

// args returns the agent container's arguments.
func (r rendered) args(t *testing.T) []string {
	t.Helper()
	v, err := lookup(r.find("DaemonSet", "route-agent"), "spec.template.spec.containers[0].args")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range v.([]any) {
		out = append(out, a.(string))
	}
	return out
}

func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		t.Skip("helm not found (scripts/install-deps installs it; make check-chart runs this test with it)")
	}
	return h
}

// render runs helm template with extra arguments (--set ..., -f ...).
func render(t *testing.T, extra ...string) (rendered, error) {
	t.Helper()
	args := append([]string{"template", "route-agent", chartDir, "--namespace", namespace}, extra...)
	cmd := exec.Command(helmBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// Only helm's message: the arguments may hold a test's secret.
		return nil, fmt.Errorf("helm template: %w: %s", err, stderr.String())
	}
	var out rendered
	for _, doc := range strings.Split(stdout.String(), "\n---\n") {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			return nil, fmt.Errorf("helm template %v: decoding %q: %w", extra, doc, err)
		}
		if len(o) > 0 {
			out = append(out, o)
		}
	}
	return out, nil
}

func mustRender(t *testing.T, extra ...string) rendered {
	t.Helper()
	r, err := render(t, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var indexed = regexp.MustCompile(`^(.*)\[(\d+)\]$`)

// lookup walks a dotted path with [i] indexes ("spec.containers[0].args").
func lookup(v any, path string) (any, error) {
	for _, part := range strings.Split(path, ".") {
		idx := -1
		if m := indexed.FindStringSubmatch(part); m != nil {
			part = m[1]
			idx, _ = strconv.Atoi(m[2])
		}
		switch c := v.(type) {
		case nil:
			return nil, nil // under a value left unset
		case object:
			v = map[string]any(c)[part]
		case map[string]any:
			v = c[part]
		default:
			return nil, fmt.Errorf("%s: %q is not a map", path, part)
		}
		if idx >= 0 {
			l, ok := v.([]any)
			if !ok || idx >= len(l) {
				return nil, fmt.Errorf("%s: no element %d at %q", path, idx, part)
			}
			v = l[idx]
		}
	}
	return v, nil
}

// row is one line of docs/install.md's values table.
type row struct {
	value, def, becomes string
}

var cell = regexp.MustCompile("`([^`]*)`")

// docRows reads the table under "### Values" in docs/install.md.
func docRows(t *testing.T) []row {
	t.Helper()
	b, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\n### Values\n")
	if !ok {
		t.Fatalf("%s: no \"### Values\" section", docsPath)
	}
	var rows []row
	for _, line := range strings.Split(after, "\n") {
		if strings.HasPrefix(line, "## ") {
			break
		}
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		f := strings.Split(strings.Trim(line, "|"), "|")
		if len(f) != 3 {
			t.Fatalf("%s: a values row needs 3 cells: %q", docsPath, line)
		}
		r := row{value: strings.Trim(strings.TrimSpace(f[0]), "`"), def: strings.TrimSpace(f[1]), becomes: strings.TrimSpace(f[2])}
		rows = append(rows, r)
	}
	if len(rows) < 20 {
		t.Fatalf("%s: found %d rows in the values table", docsPath, len(rows))
	}
	return rows
}

// target is where a documented value lands: a flag of the agent, a key of
// a ConfigMap (a field of its YAML when field is set), or a path in the
// DaemonSet or ServiceMonitor.
type target struct {
	flag           string
	configMap, key string
	field          string
	kind, path     string
}

func parseTarget(becomes string) (target, error) {
	c := cell.FindAllStringSubmatch(becomes, -1)
	switch {
	case strings.HasPrefix(becomes, "`--"):
		return target{flag: c[0][1]}, nil
	case strings.HasPrefix(becomes, "ConfigMap ") && len(c) >= 2:
		tg := target{configMap: c[0][1], key: c[1][1]}
		if strings.Contains(becomes, ", field `") {
			tg.field = c[2][1]
		}
		return tg, nil
	case (strings.HasPrefix(becomes, "DaemonSet ") || strings.HasPrefix(becomes, "ServiceMonitor ")) && len(c) >= 1:
		kind, _, _ := strings.Cut(becomes, " ")
		return target{kind: kind, path: c[0][1]}, nil
	}
	return target{}, fmt.Errorf("cannot tell where %q lands", becomes)
}

// sample is, per documented value, a setting other than the default and
// what the target then holds: the flag's value, the ConfigMap field's
// value, or the value at the path (for a list, one element it contains).
var samples = map[string]struct {
	set  []string
	want any
}{
	"routingMode":                           {[]string{"--set", "routingMode=tunnel"}, "tunnel"},
	"tunnelProtocol":                        {[]string{"--set", "tunnelProtocol=geneve"}, "geneve"},
	"tunnelPort":                            {[]string{"--set", "tunnelPort=4789"}, "4789"},
	"autoDirectNodeRoutes":                  {[]string{"--set", "autoDirectNodeRoutes=false"}, "false"},
	"ipv4NativeRoutingCIDR":                 {[]string{"--set", "ipv4NativeRoutingCIDR=10.0.0.0/8"}, "10.0.0.0/8"},
	"devices":                               {[]string{"--set", "devices={eth0,bond+}"}, "eth0,bond+"},
	"enableIPv4Masquerade":                  {[]string{"--set", "enableIPv4Masquerade=false"}, "false"},
	"enableIPv6Masquerade":                  {[]string{"--set", "enableIPv6Masquerade=true", "--set", "bpf.masquerade=false"}, "true"},
	"bpf.masquerade":                        {[]string{"--set", "bpf.masquerade=false"}, "iptables"},
	"ipMasqAgent.enabled":                   {[]string{"--set", "ipMasqAgent.enabled=false"}, ""},
	"ipMasqAgent.config.nonMasqueradeCIDRs": {[]string{"--set", "ipMasqAgent.config.nonMasqueradeCIDRs={10.0.0.0/16,172.18.0.0/16}"}, []any{"10.0.0.0/16", "172.18.0.0/16"}},
	"ipMasqAgent.config.masqLinkLocal":      {[]string{"--set", "ipMasqAgent.config.masqLinkLocal=true"}, true},
	"bgp.enabled":                           {[]string{"--set", "bgp.enabled=false"}, ""},
	"bgp.announce.podCIDR":                  {[]string{"--set", "bgp.announce.podCIDR=false"}, "false"},
	"bgp.announce.loadbalancerIP":           {[]string{"--set", "bgp.announce.loadbalancerIP=false"}, "false"},
	"bgp.config":                            {[]string{"--set-string", "bgp.config=peers: []\n"}, "peers: []"},
	"lbIPAM.enabled":                        {[]string{"--set", "lbIPAM.enabled=false"}, "false"},
	"cni.confPath":                          {[]string{"--set", "cni.confPath=/var/lib/cni/conf"}, "/var/lib/cni/conf"},
	"prometheus.enabled":                    {[]string{"--set", "prometheus.enabled=false"}, ""},
	"prometheus.port":                       {[]string{"--set", "prometheus.port=19955"}, ":19955"},
	"prometheus.serviceMonitor.enabled":     {[]string{"--set", "prometheus.serviceMonitor.enabled=true"}, "route-agent"},
	"prometheus.serviceMonitor.interval":    {[]string{"--set", "prometheus.serviceMonitor.enabled=true", "--set", "prometheus.serviceMonitor.interval=15s"}, "15s"},
	"prometheus.serviceMonitor.labels":      {[]string{"--set", "prometheus.serviceMonitor.enabled=true", "--set", "prometheus.serviceMonitor.labels.release=kube-prometheus"}, "kube-prometheus"},
	"healthPort":                            {[]string{"--set", "healthPort=19956"}, "127.0.0.1:19956"},
	"logLevel":                              {[]string{"--set", "logLevel=debug"}, "debug"},
	"extraArgs":                             {[]string{"--set", "extraArgs={--resync-period=1m}"}, "--resync-period=1m"},
	"image.repository":                      {[]string{"--set", "image.repository=registry.example.com/ra"}, "registry.example.com/ra:v"},
	"image.tag":                             {[]string{"--set", "image.tag=v9.9.9"}, "ghcr.io/routeagent/route-agent:v9.9.9"},
	"image.digest":                          {[]string{"--set", "image.digest=sha256:0123"}, "ghcr.io/routeagent/route-agent@sha256:0123"},
	"image.pullPolicy":                      {[]string{"--set", "image.pullPolicy=Never"}, "Never"},
	"resources":                             {[]string{"--set", "resources.limits.memory=1Gi"}, "1Gi"},
	"tolerations":                           {[]string{"--set", "tolerations[0].key=dedicated,tolerations[0].operator=Exists"}, "dedicated"},
	"nodeSelector":                          {[]string{"--set", "nodeSelector.role=edge"}, "edge"},
	"priorityClassName":                     {[]string{"--set", "priorityClassName=route-critical"}, "route-critical"},
}

// TestDocumentedValuesLandOnTheirFlags: for each row of the values table,
// a non-default setting reaches exactly the flag, ConfigMap key or field
// the row names, and the row's default is values.yaml's.
func TestDocumentedValuesLandOnTheirFlags(t *testing.T) {
	defaults := mustRender(t)
	defArgs := defaults.args(t)
	for _, r := range docRows(t) {
		t.Run(r.value, func(t *testing.T) {
			t.Parallel()
			tg, err := parseTarget(r.becomes)
			if err != nil {
				t.Fatal(err)
			}
			s, ok := samples[r.value]
			if !ok {
				t.Fatalf("no sample setting for the documented value %s", r.value)
			}
			got := mustRender(t, s.set...)
			switch {
			case tg.flag != "":
				var vals []string
				for _, a := range got.args(t) {
					if f, v, ok := strings.Cut(a, "="); ok && f == tg.flag {
						vals = append(vals, v)
					}
				}
				if len(vals) != 1 || vals[0] != s.want {
					t.Errorf("%v: %s is given %q, want once with %q", s.set, tg.flag, vals, s.want)
				}
				if n := countFlag(defArgs, tg.flag); n > 1 {
					t.Errorf("defaults: %s given %d times", tg.flag, n)
				}
			case tg.configMap != "":
				cm := got.find("ConfigMap", tg.configMap)
				if cm == nil {
					t.Fatalf("%v: no ConfigMap %s", s.set, tg.configMap)
				}
				data, _ := cm["data"].(map[string]any)
				str, _ := data[tg.key].(string)
				var v any = str
				if tg.field != "" {
					var m map[string]any
					if err := yaml.Unmarshal([]byte(str), &m); err != nil {
						t.Fatalf("ConfigMap %s key %s: %v", tg.configMap, tg.key, err)
					}
					v = m[tg.field]
				}
				if !reflect.DeepEqual(v, s.want) {
					t.Errorf("%v: ConfigMap %s key %s field %q holds %#v, want %#v", s.set, tg.configMap, tg.key, tg.field, v, s.want)
				}
			default:
				obj := got.find(tg.kind, "")
				if obj == nil {
					t.Fatalf("%v: no %s rendered", s.set, tg.kind)
				}
				v, err := lookup(obj, tg.path)
				if err != nil {
					t.Fatal(err)
				}
				if !holds(v, s.want) {
					t.Errorf("%v: %s %s is %#v, want it to hold %#v", s.set, tg.kind, tg.path, v, s.want)
				}
			}
		})
	}
}

func countFlag(args []string, flag string) int {
	n := 0
	for _, a := range args {
		if f, _, _ := strings.Cut(a, "="); f == flag {
			n++
		}
	}
	return n
}

// holds reports whether v is want, contains it (a list or a map's
// values), or, for a string want that v starts with, begins with it.
func holds(v, want any) bool {
	if reflect.DeepEqual(v, want) {
		return true
	}
	switch c := v.(type) {
	case []any:
		return slices.ContainsFunc(c, func(e any) bool { return holds(e, want) })
	case map[string]any:
		for _, e := range c {
			if holds(e, want) {
				return true
			}
		}
	case string:
		w, ok := want.(string)
		return ok && strings.HasPrefix(c, w)
	}
	return false
}

// TestEveryValueIsDocumented: each value of values.yaml is a row of the
// table (or lies under one), each row's default is values.yaml's, and no
// row names a value that does not exist.
func TestEveryValueIsDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	rows := docRows(t)
	documented := map[string]row{}
	for _, r := range rows {
		documented[r.value] = r
	}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if _, ok := documented[prefix]; ok {
			return
		}
		m, ok := v.(map[string]any)
		if v == nil && slices.ContainsFunc(rows, func(r row) bool { return strings.HasPrefix(r.value, prefix+".") }) {
			return // unset, its fields documented
		}
		if !ok || len(m) == 0 {
			t.Errorf("values.yaml: %s is not in %s's values table", prefix, docsPath)
			return
		}
		for k, e := range m {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, e)
		}
	}
	walk("", values)

	for _, r := range rows {
		v, err := lookup(values, r.value)
		if err != nil {
			t.Errorf("%s: %v", r.value, err)
			continue
		}
		if v == nil {
			// Left unset, or under a value left unset (ipMasqAgent.config).
			if r.def != "unset" {
				t.Errorf("%s: values.yaml leaves it unset, the table says %s", r.value, r.def)
			}
			continue
		}
		m := cell.FindStringSubmatch(r.def)
		if m == nil {
			continue // described in words: resources, tolerations
		}
		if want := canonical(v); m[1] != want {
			t.Errorf("%s: the table's default is %s, values.yaml's %s", r.value, r.def, want)
		}
	}
}

// canonical writes a default as the table does.
func canonical(v any) string {
	switch v := v.(type) {
	case string:
		if v == "" {
			return `""`
		}
		return v
	case map[string]any:
		if len(v) == 1 {
			for k, e := range v {
				return k + ": " + canonical(e)
			}
		}
	}
	j, _ := json.Marshal(v)
	return string(j)
}

// TestRenderedFlagsExist: every flag the chart gives the agent, with any
// combination of the ci/ values files, is one route-agent has.
func TestRenderedFlagsExist(t *testing.T) {
	known := agentFlags(t)
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in %s/ci: %v", chartDir, err)
	}
	for _, f := range append([]string{""}, files...) {
		var extra []string
		if f != "" {
			extra = []string{"--values", f}
		}
		for _, a := range mustRender(t, extra...).args(t) {
			flag, _, _ := strings.Cut(a, "=")
			if !known[strings.TrimPrefix(flag, "--")] {
				t.Errorf("%s: route-agent has no flag %s", f, flag)
			}
		}
	}
}

// agentFlags builds route-agent and reads its flags from --help.
func agentFlags(t *testing.T) map[string]bool {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "route-agent")
	build := exec.Command("go", "build", "-o", bin, "routeagent.io/route-agent/cmd/route-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building route-agent: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("route-agent --help: %v\n%s", err, out)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		known[m[1]] = true
	}
	if !known["routing-mode"] {
		t.Fatalf("route-agent --help lists no --routing-mode:\n%s", out)
	}
	return known
}

// TestConfigMapsParse: the ConfigMaps the chart writes from the ci/ values
// files are ones the agent's own strict parsers accept.
func TestConfigMapsParse(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	seen := map[string]int{}
	for _, f := range files {
		r := mustRender(t, "--values", f)
		if cm := r.find("ConfigMap", "bgp-config"); cm != nil {
			seen["bgp-config"]++
			s, _ := cm["data"].(map[string]any)["config.yaml"].(string)
			if _, err := bgpconfig.Parse([]byte(s)); err != nil {
				t.Errorf("%s: bgp-config: %v", f, err)
			}
		}
		if cm := r.find("ConfigMap", "ip-masq-agent"); cm != nil {
			seen["ip-masq-agent"]++
			s, _ := cm["data"].(map[string]any)["config"].(string)
			if _, err := masqconfig.Parse([]byte(s)); err != nil {
				t.Errorf("%s: ip-masq-agent: %v", f, err)
			}
		}
	}
	if seen["bgp-config"] == 0 || seen["ip-masq-agent"] == 0 {
		t.Errorf("the ci/ values files wrote ConfigMaps %v; want both kinds at least once", seen)
	}
}

// TestFollowsWhatIsEnabled: capabilities, mounts and RBAC grow and shrink
// with the features.
func TestFollowsWhatIsEnabled(t *testing.T) {
	type facts struct {
		caps, volumes, configMaps []string
		secrets, leases, status   bool
	}
	read := func(t *testing.T, r rendered) facts {
		var f facts
		ds := r.find("DaemonSet", "route-agent")
		c, _ := lookup(ds, "spec.template.spec.containers[0].securityContext.capabilities.add")
		for _, e := range c.([]any) {
			f.caps = append(f.caps, e.(string))
		}
		vols, _ := lookup(ds, "spec.template.spec.volumes")
		for _, v := range vols.([]any) {
			f.volumes = append(f.volumes, v.(map[string]any)["name"].(string))
		}
		for _, kind := range []string{"Role", "ClusterRole"} {
			rules, _ := lookup(r.find(kind, "route-agent"), "rules")
			for _, ru := range rules.([]any) {
				m := ru.(map[string]any)
				res := fmt.Sprint(m["resources"])
				switch {
				case res == "[configmaps]":
					for _, n := range m["resourceNames"].([]any) {
						f.configMaps = append(f.configMaps, n.(string))
					}
				case res == "[secrets]":
					f.secrets = true
				case res == "[leases]":
					f.leases = true
				case res == "[services/status]":
					f.status = true
				}
			}
		}
		return f
	}
	for _, tc := range []struct {
		name string
		set  []string
		want facts
	}{
		{"defaults", nil, facts{
			caps: []string{"NET_ADMIN", "BPF", "PERFMON", "SYS_ADMIN"}, volumes: []string{"run", "bpffs", "cni-conf", "proc-sys-net"},
			configMaps: []string{"bgp-config", "ip-masq-agent"}, secrets: true, leases: true, status: true}},
		{"no masquerade", []string{"--set", "enableIPv4Masquerade=false"}, facts{
			caps: []string{"NET_ADMIN"}, volumes: []string{"run", "cni-conf", "proc-sys-net"},
			configMaps: []string{"bgp-config"}, secrets: true, leases: true, status: true}},
		{"nftables masquerade", []string{"--set", "bpf.masquerade=false"}, facts{
			caps: []string{"NET_ADMIN"}, volumes: []string{"run", "cni-conf", "proc-sys-net"},
			configMaps: []string{"bgp-config", "ip-masq-agent"}, secrets: true, leases: true, status: true}},
		{"tunnel without masquerade", []string{"--set", "routingMode=tunnel", "--set", "enableIPv4Masquerade=false"}, facts{
			caps: []string{"NET_ADMIN", "SYS_ADMIN"}, volumes: []string{"run", "cni-conf", "proc-sys-net"},
			configMaps: []string{"bgp-config"}, secrets: true, leases: true, status: true}},
		{"no ip-masq-agent, no allocator, no CNI config", []string{"--set", "ipMasqAgent.enabled=false", "--set", "lbIPAM.enabled=false", "--set", "cni.confPath="}, facts{
			caps: []string{"NET_ADMIN", "BPF", "PERFMON", "SYS_ADMIN"}, volumes: []string{"run", "bpffs", "proc-sys-net"},
			configMaps: []string{"bgp-config"}, secrets: true}},
		// Without BGP the allocator has no pools, whatever lbIPAM.enabled says.
		{"no BGP", []string{"--set", "bgp.enabled=false"}, facts{
			caps: []string{"NET_ADMIN", "BPF", "PERFMON", "SYS_ADMIN"}, volumes: []string{"run", "bpffs", "cni-conf", "proc-sys-net"},
			configMaps: []string{"ip-masq-agent"}}},
		{"tunnel without BGP or masquerade", []string{"--set", "bgp.enabled=false", "--set", "routingMode=tunnel", "--set", "enableIPv4Masquerade=false"}, facts{
			caps: []string{"NET_ADMIN", "SYS_ADMIN"}, volumes: []string{"run", "cni-conf", "proc-sys-net"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := read(t, mustRender(t, tc.set...)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestWithoutBGP: bgp.enabled false gives the agent an explicit empty
// --bgp-config and --lb-ipam=false (the allocator's pools are the
// bgp-config's), and writes no bgp-config ConfigMap even when bgp.config is
// set.
func TestWithoutBGP(t *testing.T) {
	r := mustRender(t, "--set", "bgp.enabled=false", "--set", "lbIPAM.enabled=true", "--set-string", "bgp.config=peers: []\n")
	args := r.args(t)
	for _, want := range []string{"--bgp-config=", "--lb-ipam=false"} {
		if !slices.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if cm := r.find("ConfigMap", "bgp-config"); cm != nil {
		t.Errorf("a bgp-config ConfigMap is rendered with bgp.enabled false: %v", cm)
	}
	for _, want := range []string{"--bgp-config=" + namespace + "/bgp-config", "--lb-ipam=true"} {
		if args := mustRender(t).args(t); !slices.Contains(args, want) {
			t.Errorf("defaults: args %q lack %q", args, want)
		}
	}
}

// TestRefusesBadValues: a bad value fails the install with its name and
// what it holds, never a secret.
func TestRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"--set", "routingMode=tunel"}, `routingMode "tunel": want native or tunnel`},
		{[]string{"--set", "tunnelProtocol=gre"}, `tunnelProtocol "gre": want vxlan or geneve`},
		{[]string{"--set", "tunnelPort=70000"}, `tunnelPort "70000"`},
		{[]string{"--set-string", "autoDirectNodeRoutes=yes"}, `autoDirectNodeRoutes "yes": want true or false`},
		{[]string{"--set", "ipv4NativeRoutingCIDR=10.0.0.0"}, `ipv4NativeRoutingCIDR "10.0.0.0": want an IPv4 CIDR`},
		{[]string{"--set", "enableIPv6Masquerade=true"}, `enableIPv6Masquerade true: the eBPF masquerade (bpf.masquerade true) is IPv4 only`},
		{[]string{"--set-string", "bgp.enabled=no"}, `bgp.enabled "no": want true or false`},
		{[]string{"--set", "prometheus.enabled=false", "--set", "prometheus.serviceMonitor.enabled=true"}, `prometheus.serviceMonitor.enabled true: needs prometheus.enabled true`},
		{[]string{"--set", "healthPort=0"}, `healthPort "0": want a port number 1-65535`},
		{[]string{"--set", "logLevel=trace"}, `logLevel "trace": want debug, info, warn or error`},
		{[]string{"--set", "cni.confPath=etc/cni"}, `cni.confPath "etc/cni": want an absolute path`},
		{[]string{"--set", "bgp.config=12345678"}, `bgp.config: want a map`},
		{[]string{"--set", "bgp.config[0]=s3cret-password"}, `bgp.config: want a map`},
	} {
		_, err := render(t, tc.set...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error with %q", tc.set, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%v: the error shows the bgp-config's content: %v", tc.set, err)
		}
	}
}
