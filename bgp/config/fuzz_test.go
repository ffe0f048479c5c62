package config

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/validate/content"
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
			if p.Password.IsSet() && p.PasswordSecret != "" {
				t.Fatalf("peers[%d] accepted with both password and password-secret", p.Index)
			}
			if p.PasswordSecret != "" && len(content.IsDNS1123Subdomain(p.PasswordSecret)) > 0 {
				t.Fatalf("peers[%d] accepted with password-secret %q, not a Secret name", p.Index, p.PasswordSecret)
			}
			for _, v6 := range []bool{false, true} {
				nh := p.NextHop(v6)
				if !nh.IsValid() {
					continue
				}
				if nh.Is6() != v6 || !p.Carries(v6) || nh.IsLinkLocalUnicast() || nh.IsUnspecified() {
					t.Fatalf("peers[%d] accepted with next hop %s for IPv6=%v (dual-stack %v, address %s)", p.Index, nh, v6, p.DualStack, p.Address)
				}
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
