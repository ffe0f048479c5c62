package engine

import "github.com/prometheus/client_golang/prometheus"

var (
	runsDesc = prometheus.NewDesc("route_agent_part_reconciles_total",
		"Reconciles of the part since the agent started.", []string{"part"}, nil)
	failuresDesc = prometheus.NewDesc("route_agent_part_reconcile_failures_total",
		"Failed reconciles of the part since the agent started.", []string{"part"}, nil)
	failingDesc = prometheus.NewDesc("route_agent_part_failing",
		"1 when the part's last reconcile failed (routectl status shows the error).", []string{"part"}, nil)
	lastSuccessDesc = prometheus.NewDesc("route_agent_part_last_success_timestamp_seconds",
		"When the part last reconciled successfully; 0 if never.", []string{"part"}, nil)
	warningsDesc = prometheus.NewDesc("route_agent_part_warnings",
		"Problems the part's last plan reported that did not stop it (routectl status lists them).", []string{"part"}, nil)
	readyDesc = prometheus.NewDesc("route_agent_ready",
		"1 when the readiness probe passes.", nil, nil)
)

// Collector exports every part's status at scrape time, so the metrics
// never disagree with routectl.
func (e *Engine) Collector() prometheus.Collector { return collector{e} }

type collector struct{ e *Engine }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{runsDesc, failuresDesc, failingDesc, lastSuccessDesc, warningsDesc, readyDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.e.Status() {
		ch <- prometheus.MustNewConstMetric(runsDesc, prometheus.CounterValue, float64(st.Runs), st.Name)
		ch <- prometheus.MustNewConstMetric(failuresDesc, prometheus.CounterValue, float64(st.Failures), st.Name)
		ch <- prometheus.MustNewConstMetric(failingDesc, prometheus.GaugeValue, boolValue(st.LastError != ""), st.Name)
		var last float64
		if !st.LastSuccess.IsZero() {
			last = float64(st.LastSuccess.UnixMilli()) / 1000
		}
		ch <- prometheus.MustNewConstMetric(lastSuccessDesc, prometheus.GaugeValue, last, st.Name)
		ch <- prometheus.MustNewConstMetric(warningsDesc, prometheus.GaugeValue, float64(len(st.Warnings)), st.Name)
	}
	ready, _ := c.e.Ready()
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, boolValue(ready))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
