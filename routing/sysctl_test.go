package routing

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func TestSysctlsEnsure(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"net/ipv4/ip_forward":            "0\n",
		"net/ipv6/conf/all/forwarding":   "0\n",
		"net/ipv4/conf/eth0/rp_filter":   "1\n",
		"net/ipv4/conf/eth1/rp_filter":   "0\n",
		"net/ipv4/conf/tunnel/rp_filter": "2\n",
	}
	for k, v := range files {
		p := filepath.Join(dir, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := &Sysctls{Dir: dir, Log: slog.New(slog.DiscardHandler)}
	if err := s.Ensure(true, false, []string{"eth0", "eth1", "tunnel"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"net/ipv4/ip_forward":            "1",
		"net/ipv6/conf/all/forwarding":   "0\n", // no IPv6 pods: left alone
		"net/ipv4/conf/eth0/rp_filter":   "2",   // strict becomes loose
		"net/ipv4/conf/eth1/rp_filter":   "0\n", // off stays off
		"net/ipv4/conf/tunnel/rp_filter": "2\n", // already right: not rewritten
	}
	for k, v := range want {
		b, err := os.ReadFile(filepath.Join(dir, k))
		if err != nil || string(b) != v {
			t.Errorf("%s = %q (%v), want %q", k, b, err, v)
		}
	}
	if err := s.Ensure(false, false, []string{"missing0"}); err == nil || !filepath.IsAbs(dir) {
		t.Errorf("a device without sysctls: err = %v, want one naming the key", err)
	}
}
