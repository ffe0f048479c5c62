package cni

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

func TestConflistGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		c      Config
	}{
		{"ipv4.conflist", Config{PodCIDRs: prefixes("10.5.112.0/24")}},
		{"dualstack.conflist", Config{PodCIDRs: prefixes("10.5.112.0/24", "fd00:10:5:70::/64")}},
		{"ipv6-first.conflist", Config{PodCIDRs: prefixes("fd00:10:5:70::/64", "10.5.112.0/24")}},
		{"mtu.conflist", Config{PodCIDRs: prefixes("10.5.112.0/24"), MTU: 1450}},
		{"datadir.conflist", Config{PodCIDRs: prefixes("10.5.112.0/24"), IPAMDataDir: "/tmp/lab/ipam"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			got, err := Conflist(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("Conflist(%+v) differs from %s (-want +got):\n%s", tc.c, path, diff)
			}
			again, _ := Conflist(tc.c)
			if !bytes.Equal(got, again) {
				t.Error("two renderings of the same Config differ")
			}
			if !json.Valid(got) || !bytes.HasSuffix(got, []byte("}\n")) {
				t.Error("not JSON with a trailing newline")
			}
		})
	}
}

// The structure the plugins read, independent of formatting.
func TestConflistShape(t *testing.T) {
	b, err := Conflist(Config{PodCIDRs: prefixes("10.5.112.0/24", "fd00::/64"), MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Plugins    []struct {
			Type   string `json:"type"`
			IPMasq *bool  `json:"ipMasq"`
			MTU    int    `json:"mtu"`
			IPAM   struct {
				Type   string                `json:"type"`
				Ranges [][]map[string]string `json:"ranges"`
				Routes []map[string]string   `json:"routes"`
			} `json:"ipam"`
			Capabilities map[string]bool `json:"capabilities"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.CNIVersion != "1.0.0" || got.Name != "route-agent" || len(got.Plugins) != 2 {
		t.Fatalf("header: %+v", got)
	}
	ptp, pm := got.Plugins[0], got.Plugins[1]
	if ptp.Type != "ptp" || ptp.IPMasq == nil || *ptp.IPMasq || ptp.MTU != 1500 || ptp.IPAM.Type != "host-local" {
		t.Errorf("ptp: %+v", ptp)
	}
	wantRanges := [][]map[string]string{{{"subnet": "10.5.112.0/24"}}, {{"subnet": "fd00::/64"}}}
	if diff := cmp.Diff(wantRanges, ptp.IPAM.Ranges); diff != "" {
		t.Errorf("ranges (-want +got):\n%s", diff)
	}
	wantRoutes := []map[string]string{{"dst": "0.0.0.0/0"}, {"dst": "::/0"}}
	if diff := cmp.Diff(wantRoutes, ptp.IPAM.Routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	if pm.Type != "portmap" || !pm.Capabilities["portMappings"] {
		t.Errorf("portmap: %+v", pm)
	}
}

func TestConflistRanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cidrs  []netip.Prefix
		ranges [][]map[string]string
		routes []string
	}{
		{"ipv4", prefixes("10.5.112.0/24"), [][]map[string]string{{{"subnet": "10.5.112.0/24"}}}, []string{"0.0.0.0/0"}},
		{"ipv6", prefixes("fd00::/64"), [][]map[string]string{{{"subnet": "fd00::/64"}}}, []string{"::/0"}},
		{"ipv6 first", prefixes("fd00::/64", "10.0.0.0/24"),
			[][]map[string]string{{{"subnet": "fd00::/64"}}, {{"subnet": "10.0.0.0/24"}}}, []string{"::/0", "0.0.0.0/0"}},
		// Not something Kubernetes allows, but well defined: still one
		// address per family.
		{"two of a family", prefixes("10.0.0.0/24", "fd00::/64", "10.0.1.0/24"),
			[][]map[string]string{{{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.1.0/24"}}, {{"subnet": "fd00::/64"}}},
			[]string{"0.0.0.0/0", "::/0"}},
		{"smallest", prefixes("10.0.0.0/30", "fd00::/126"),
			[][]map[string]string{{{"subnet": "10.0.0.0/30"}}, {{"subnet": "fd00::/126"}}}, []string{"0.0.0.0/0", "::/0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Conflist(Config{PodCIDRs: tc.cidrs})
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Plugins []struct {
					IPAM struct {
						Ranges [][]map[string]string  `json:"ranges"`
						Routes []struct{ Dst string } `json:"routes"`
					} `json:"ipam"`
				} `json:"plugins"`
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.ranges, got.Plugins[0].IPAM.Ranges); diff != "" {
				t.Errorf("ranges (-want +got):\n%s", diff)
			}
			var routes []string
			for _, r := range got.Plugins[0].IPAM.Routes {
				routes = append(routes, r.Dst)
			}
			if diff := cmp.Diff(tc.routes, routes); diff != "" {
				t.Errorf("routes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConflistErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"no CIDRs", Config{}, "no pod CIDRs"},
		{"empty list", Config{PodCIDRs: []netip.Prefix{}}, "no pod CIDRs"},
		{"zero prefix", Config{PodCIDRs: []netip.Prefix{{}}}, "invalid pod CIDR"},
		{"host bits", Config{PodCIDRs: prefixes("10.5.112.7/24")}, "10.5.112.7/24 has host bits set (the network is 10.5.112.0/24)"},
		{"duplicate", Config{PodCIDRs: prefixes("10.5.112.0/24", "fd00::/64", "10.5.112.0/24")}, "10.5.112.0/24 listed twice"},
		{"v4 too small", Config{PodCIDRs: prefixes("10.5.112.0/31")}, "10.5.112.0/31 is too small"},
		{"v6 too small", Config{PodCIDRs: prefixes("fd00::/127")}, "fd00::/127 is too small"},
		{"mapped", Config{PodCIDRs: prefixes("::ffff:10.0.0.0/120")}, "IPv4-mapped"},
		{"negative MTU", Config{PodCIDRs: prefixes("10.0.0.0/24"), MTU: -1}, "MTU -1 out of range"},
		{"tiny MTU", Config{PodCIDRs: prefixes("10.0.0.0/24"), MTU: 67}, "MTU 67 out of range"},
		{"huge MTU", Config{PodCIDRs: prefixes("10.0.0.0/24"), MTU: 65536}, "MTU 65536 out of range"},
		{"MTU below IPv6 minimum", Config{PodCIDRs: prefixes("10.0.0.0/24", "fd00::/64"), MTU: 1000}, "below IPv6's minimum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Conflist(tc.c)
			if err == nil {
				t.Fatalf("no error; got\n%s", b)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	data1 := []byte(`{"cniVersion":"1.0.0","name":"one"}` + "\n")
	data2 := []byte(`{"cniVersion":"1.0.0","name":"two"}` + "\n")
	for _, tc := range []struct {
		name        string
		setup       func(t *testing.T, dir string) // prepares dir before Write
		data        []byte
		wantChanged bool
	}{
		{"new file", nil, data1, true},
		{"missing dir", func(t *testing.T, dir string) { os.Remove(dir) }, data1, true},
		{"same content", func(t *testing.T, dir string) { mustWrite(t, filepath.Join(dir, FileName), data1, 0o644) }, data1, false},
		{"other content", func(t *testing.T, dir string) { mustWrite(t, filepath.Join(dir, FileName), data2, 0o644) }, data1, true},
		{"fixes a shorter file", func(t *testing.T, dir string) { mustWrite(t, filepath.Join(dir, FileName), data1[:5], 0o600) }, data1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "net.d")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			// Files of others that must stay exactly as they are.
			others := map[string][]byte{
				"05-other.conflist":   []byte("other\n"),
				"99-loopback.conf":    []byte("loopback\n"),
				FileName + ".bak":     []byte("backup\n"),
				"." + FileName + "xx": []byte("hidden\n"),
			}
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			if _, err := os.Stat(dir); err == nil {
				for name, b := range others {
					mustWrite(t, filepath.Join(dir, name), b, 0o600)
				}
			} else {
				others = nil
			}
			path := filepath.Join(dir, FileName)
			before, _ := os.Stat(path)
			// A coarse-grained file system clock must not hide a rewrite.
			if before != nil {
				old := time.Now().Add(-time.Hour)
				if err := os.Chtimes(path, old, old); err != nil {
					t.Fatal(err)
				}
				before, _ = os.Stat(path)
			}

			changed, err := Write(dir, tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Errorf("file holds %q, want %q", got, tc.data)
			}
			after, _ := os.Stat(path)
			if tc.wantChanged {
				if after.Mode().Perm() != 0o644 {
					t.Errorf("mode %v, want 0644", after.Mode().Perm())
				}
			} else if !after.ModTime().Equal(before.ModTime()) || !os.SameFile(before, after) {
				t.Errorf("unchanged content was rewritten (mtime %v -> %v)", before.ModTime(), after.ModTime())
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != len(others)+1 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("directory holds %q, want only %s and the others' files", names, FileName)
			}
			for name, b := range others {
				got, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil || !bytes.Equal(got, b) {
					t.Errorf("%s: %q, %v; want it untouched", name, got, err)
				}
			}
		})
	}
}

// Write replaces the file rather than rewriting it in place: a reader that
// opened the old file still reads the old content, whole.
func TestWriteReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	old := bytes.Repeat([]byte("a"), 1<<16)
	if _, err := Write(dir, old); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before, _ := f.Stat()
	if changed, err := Write(dir, []byte("new\n")); err != nil || !changed {
		t.Fatalf("Write = %v, %v", changed, err)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("the file was rewritten in place, not replaced")
	}
	b, err := os.ReadFile(f.Name())
	if err != nil || string(b) != "new\n" {
		t.Errorf("path holds %q, %v", b, err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil || !bytes.Equal(buf.Bytes(), old) {
		t.Errorf("the old file's reader got %d bytes, want the whole old content", buf.Len())
	}
}

func TestWriteErrors(t *testing.T) {
	t.Run("dir is a file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "net.d")
		mustWrite(t, dir, []byte("x"), 0o644)
		_, err := Write(dir, []byte("{}\n"))
		wantPathError(t, err, filepath.Join(dir, FileName))
	})
	t.Run("parent is a file", func(t *testing.T) {
		parent := filepath.Join(t.TempDir(), "etc")
		mustWrite(t, parent, []byte("x"), 0o644)
		dir := filepath.Join(parent, "net.d")
		_, err := Write(dir, []byte("{}\n"))
		wantPathError(t, err, filepath.Join(dir, FileName))
	})
	t.Run("target is a directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, FileName), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Write(dir, []byte("{}\n"))
		wantPathError(t, err, filepath.Join(dir, FileName))
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("left %d entries in the directory, want only the one that was there", len(entries))
		}
	})
	t.Run("read-only dir", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root writes into read-only directories")
		}
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
		_, err := Write(dir, []byte("{}\n"))
		wantPathError(t, err, filepath.Join(dir, FileName))
	})
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(dir, "05-other.conflist")
	mustWrite(t, other, []byte("other\n"), 0o644)
	if _, err := Write(dir, []byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", FileName, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("Remove touched another file: %v", err)
	}
	// Absent file, absent directory: nothing to do.
	if err := Remove(dir); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := Remove(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("Remove in a missing dir: %v", err)
	}
	// A directory in its place cannot be removed as a file; the error says where.
	if err := os.Mkdir(filepath.Join(dir, FileName), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(dir, FileName, "x"), nil, 0o644)
	wantPathError(t, Remove(dir), filepath.Join(dir, FileName))
}

func mustWrite(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

func wantPathError(t *testing.T, err error, path string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one naming %s", path)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name %s", err, path)
	}
}
