package routing

import "github.com/prometheus/client_golang/prometheus"

var (
	routesDesc = prometheus.NewDesc("route_agent_routes",
		"Routes the agent manages, by kind (direct, bgp) and state (installed, pending, refused, failed).", []string{"kind", "state"}, nil)
	healsDesc = prometheus.NewDesc("route_agent_route_heals_total",
		"Routes put back after they went missing from the kernel (deleted by hand, lost with a link).", nil, nil)
	writesDesc = prometheus.NewDesc("route_agent_route_writes_total",
		"Kernel route writes by operation.", []string{"op"}, nil)
	writeErrorsDesc = prometheus.NewDesc("route_agent_route_errors_total",
		"Failed kernel route writes and dumps.", nil, nil)
)

// Collector exports the routes and the reconciler's counters at scrape time.
func (p *Part) Collector() prometheus.Collector { return collector{p} }

type collector struct{ p *Part }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{routesDesc, healsDesc, writesDesc, writeErrorsDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	counts := map[[2]string]int{}
	for _, k := range []Kind{KindDirect, KindBGP} {
		for _, s := range []string{"installed", "pending", "refused", "failed"} {
			counts[[2]string{string(k), s}] = 0
		}
	}
	for _, v := range c.p.Routes() {
		counts[[2]string{string(v.Kind), v.State}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(routesDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	st := c.p.Stats()
	ch <- prometheus.MustNewConstMetric(healsDesc, prometheus.CounterValue, float64(st.Heals))
	ch <- prometheus.MustNewConstMetric(writesDesc, prometheus.CounterValue, float64(st.Adds), "add")
	ch <- prometheus.MustNewConstMetric(writesDesc, prometheus.CounterValue, float64(st.Replaces), "replace")
	ch <- prometheus.MustNewConstMetric(writesDesc, prometheus.CounterValue, float64(st.Deletes), "delete")
	ch <- prometheus.MustNewConstMetric(writeErrorsDesc, prometheus.CounterValue, float64(st.Errors))
}
