package config

import (
	"net/netip"
	"slices"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, tc := range append(append([]parseTest{}, validTests...), errorTests...) {
		f.Add([]byte(tc.input))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse() returned a config along with error %v", err)
			}
			checkErrorShape(t, err)
			return
		}
		if cfg == nil {
			t.Fatal("Parse() returned neither a config nor an error")
		}
		if cfg.CIDRsSet != (len(cfg.NonMasqueradeCIDRs) > 0) {
			t.Fatalf("CIDRsSet = %v with %d CIDRs", cfg.CIDRsSet, len(cfg.NonMasqueradeCIDRs))
		}
		for _, list := range [][]netip.Prefix{cfg.NonMasqueradeCIDRs, cfg.NonMasqueradeSrcCIDRs} {
			for i, p := range list {
				if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() {
					t.Fatalf("bad prefix %s accepted", p)
				}
				if slices.Contains(list[:i], p) {
					t.Fatalf("duplicate prefix %s kept", p)
				}
			}
		}
		if cfg.ResyncInterval != 0 && cfg.ResyncInterval < minResyncInterval {
			t.Fatalf("resync interval %s accepted", cfg.ResyncInterval)
		}
	})
}
