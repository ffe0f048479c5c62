package snat

import (
	"strconv"
	"testing"
)

// TestBench runs Bench and prints its table (go test -v -run TestBench).
func TestBench(t *testing.T) {
	needRoot(t)
	o := BenchOptions{}
	if testing.Short() {
		o = BenchOptions{RoutableSizes: []int{10, 16000}, NewFlows: 200, Repeat: 10000}
	}
	res, err := Bench(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != len(o.RoutableSizes) && len(o.RoutableSizes) > 0 {
		t.Fatalf("%d rows for %d sizes", len(res.Rows), len(o.RoutableSizes))
	}
	for _, row := range res.Rows {
		if row.Established <= 0 || row.NewFlow <= 0 || row.NewFlowChained <= 0 || row.Host <= 0 {
			t.Errorf("row without a time: %+v", row)
		}
	}
	t.Logf("egress program, per packet:\n%s", res)
}

// BenchmarkEgress reports the same figures as metrics, one sub-benchmark
// per size of the routable set.
func BenchmarkEgress(b *testing.B) {
	needRoot(b)
	for _, n := range []int{10, 1000, 16000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			res, err := Bench(BenchOptions{RoutableSizes: []int{n}, NewFlows: min(max(b.N, 100), benchMaxNewFlows), Repeat: max(b.N, 1000)})
			if err != nil {
				b.Fatal(err)
			}
			row := res.Rows[0]
			b.ReportMetric(float64(row.Established.Nanoseconds()), "ns/established")
			b.ReportMetric(float64(row.NewFlow.Nanoseconds()), "ns/new-flow")
			b.ReportMetric(float64(row.NewFlowChained.Nanoseconds()), "ns/new-flow-chained")
			b.ReportMetric(float64(row.Host.Nanoseconds()), "ns/host")
		})
	}
}
