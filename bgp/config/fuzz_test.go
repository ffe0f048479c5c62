package config

import (
	"testing"
	"time"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(seedExample))
	for _, tc := range validTests {
		f.Add([]byte(tc.input))
	}
	for _, tc := range errorTests {
		f.Add([]byte(tc.input))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("Parse() returned a config along with error %v", err)
			}
			if err.Error() == "" {
				t.Fatal("Parse() returned an empty error")
			}
			return
		}
		if cfg == nil {
			t.Fatal("Parse() returned neither a config nor an error")
		}
		for _, p := range cfg.Peers {
			if !p.Address.IsValid() || p.ASN == 0 || p.MyASN == 0 || p.Port == 0 {
				t.Fatalf("invalid peer accepted: %+v", p)
			}
			if p.HoldTime < 3*time.Second || p.KeepaliveTime >= p.HoldTime {
				t.Fatalf("peer keepalive %s not below hold time %s", p.KeepaliveTime, p.HoldTime)
			}
		}
		for _, p := range cfg.Pools {
			if p.Name == "" || len(p.Prefixes) == 0 {
				t.Fatalf("invalid pool accepted: %+v", p)
			}
			if p.Protocol == ProtocolBGP && len(p.Advertisements) == 0 {
				t.Fatalf("bgp pool %q without advertisements", p.Name)
			}
		}
	})
}
