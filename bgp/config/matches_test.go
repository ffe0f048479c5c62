package config

import "testing"

func TestMatchesNode(t *testing.T) {
	tests := []struct {
		desc      string
		selectors string // node-selectors of the peer, as YAML
		labels    map[string]string
		want      bool
	}{
		{desc: "no selectors, no labels", labels: nil, want: true},
		{desc: "no selectors", labels: map[string]string{"a": "b"}, want: true},
		{desc: "empty selector", selectors: "[{}]", labels: nil, want: true},
		{desc: "match-labels match", selectors: "[{match-labels: {rack: r1, zone: z}}]", labels: map[string]string{"rack": "r1", "zone": "z", "x": "y"}, want: true},
		{desc: "match-labels partial", selectors: "[{match-labels: {rack: r1, zone: z}}]", labels: map[string]string{"rack": "r1"}, want: false},
		{desc: "match-labels other value", selectors: "[{match-labels: {rack: r1}}]", labels: map[string]string{"rack": "r2"}, want: false},
		{desc: "In match", selectors: "[{match-expressions: [{key: kubernetes/route, operator: In, values: [bgp-peer-83, bgp-peer-84]}]}]", labels: map[string]string{"kubernetes/route": "bgp-peer-84"}, want: true},
		{desc: "In other value", selectors: "[{match-expressions: [{key: kubernetes/route, operator: In, values: [bgp-peer-83]}]}]", labels: map[string]string{"kubernetes/route": "bgp-peer-84"}, want: false},
		{desc: "In without the label", selectors: "[{match-expressions: [{key: kubernetes/route, operator: In, values: [bgp-peer-83]}]}]", labels: nil, want: false},
		{desc: "NotIn other value", selectors: "[{match-expressions: [{key: zone, operator: NotIn, values: [a]}]}]", labels: map[string]string{"zone": "b"}, want: true},
		{desc: "NotIn without the label", selectors: "[{match-expressions: [{key: zone, operator: NotIn, values: [a]}]}]", labels: nil, want: true},
		{desc: "NotIn listed value", selectors: "[{match-expressions: [{key: zone, operator: NotIn, values: [a]}]}]", labels: map[string]string{"zone": "a"}, want: false},
		{desc: "Exists", selectors: "[{match-expressions: [{key: gpu, operator: Exists}]}]", labels: map[string]string{"gpu": ""}, want: true},
		{desc: "DoesNotExist", selectors: "[{match-expressions: [{key: gpu, operator: DoesNotExist}]}]", labels: map[string]string{"gpu": ""}, want: false},
		{desc: "labels and expressions are ANDed", selectors: "[{match-labels: {rack: r1}, match-expressions: [{key: zone, operator: In, values: [a]}]}]", labels: map[string]string{"rack": "r1", "zone": "b"}, want: false},
		{desc: "selectors are ORed, first matches", selectors: "[{match-labels: {rack: r1}}, {match-labels: {rack: r2}}]", labels: map[string]string{"rack": "r1"}, want: true},
		{desc: "selectors are ORed, second matches", selectors: "[{match-labels: {rack: r1}}, {match-labels: {rack: r2}}]", labels: map[string]string{"rack": "r2"}, want: true},
		{desc: "selectors are ORed, none matches", selectors: "[{match-labels: {rack: r1}}, {match-labels: {rack: r2}}]", labels: map[string]string{"rack": "r3"}, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			input := onePeer("")
			if tc.selectors != "" {
				input = onePeer("  node-selectors: " + tc.selectors + "\n")
			}
			cfg, err := Parse([]byte(input))
			if err != nil {
				t.Fatalf("Parse() failed: %v", err)
			}
			if got := cfg.Peers[0].MatchesNode(tc.labels); got != tc.want {
				t.Errorf("MatchesNode(%v) = %v, want %v", tc.labels, got, tc.want)
			}
		})
	}
}
