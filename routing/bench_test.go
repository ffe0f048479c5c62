package routing

import (
	"testing"
	"time"
)

const benchRoutes = 100_000

// TestInstallSpeed runs BenchInstall on 100,000 routes: Set must install
// them at least twice as fast as serial RouteReplace, and a Set with
// nothing to do must change no route and take well under a second.
func TestInstallSpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("installs 100,000 routes")
	}
	if raceEnabled {
		t.Skip("the race detector slows the Go side only, so the comparison would mean nothing")
	}
	n := newTestNS(t)
	res, err := BenchInstall(n.ns, benchRoutes)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Speedup() < 2 {
		t.Errorf("Set installed %d routes %.1f× as fast as serial RouteReplace, want at least 2×", res.Routes, res.Speedup())
	}
	if res.NoopChanges != 0 {
		t.Errorf("a Set with nothing to do changed %d routes", res.NoopChanges)
	}
	if res.Noop > time.Second {
		t.Errorf("a Set with nothing to do over %d routes took %v", res.Routes, res.Noop)
	}
}

func BenchmarkInstall(b *testing.B) {
	n := newTestNS(b)
	for b.Loop() {
		res, err := BenchInstall(n.ns, benchRoutes)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Serial.Seconds(), "serial-s")
		b.ReportMetric(res.Install.Seconds(), "set-s")
		b.ReportMetric(res.Speedup(), "speedup")
		b.ReportMetric(res.Noop.Seconds(), "noop-s")
		b.ReportMetric(float64(res.NoopChanges), "noop-changes")
	}
}
