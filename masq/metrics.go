package masq

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	packetsDesc = prometheus.NewDesc("route_agent_masquerade_packets_total",
		"Pod packets by what the masquerade datapath did with them: translated, reverse_translated, icmp_error_translated, "+
			"new_flow, skipped_routable, skipped_nonmasq_source, and dropped_* (no_port: the port range is exhausted for a "+
			"destination; a packet is never sent untranslated).",
		[]string{"result"}, nil)
	routableDesc = prometheus.NewDesc("route_agent_masquerade_routable_prefixes",
		"Prefixes in the routable set (not masqueraded), by the kind of reason they are there.", []string{"reason"}, nil)
)

// Collector exports the datapath's counters and the routable set's size at
// scrape time.
func (p *Part) Collector() prometheus.Collector { return collector{p} }

type collector struct{ p *Part }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- routableDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.p.dp.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(packetsDesc, err)
	}
	for result, n := range counts {
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(n), result)
	}
	d, ok := c.p.Desired()
	if !ok {
		return
	}
	byKind := map[string]int{}
	for _, e := range d.Set.Entries {
		for _, r := range e.Reasons {
			byKind[r.Kind]++
		}
	}
	for kind, n := range byKind {
		ch <- prometheus.MustNewConstMetric(routableDesc, prometheus.GaugeValue, float64(n), kind)
	}
}
