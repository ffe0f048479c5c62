package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"routeagent.io/route-agent/e2e/lab"
)

// partStatus is one part of `routectl status -o json`.
type partStatus struct {
	Name           string     `json:"name"`
	State          string     `json:"state"`
	Runs           uint64     `json:"runs"`
	LastRun        *time.Time `json:"lastRun"`
	LastSuccess    *time.Time `json:"lastSuccess"`
	LastDurationMs int64      `json:"lastDurationMs"`
	LastError      string     `json:"lastError"`
}

// routingPart returns the routing part's status from n's agent.
func routingPart(ctx context.Context, l *lab.Lab, n *lab.Node) (partStatus, error) {
	out, err := l.Routectl(ctx, n, "status", "-o", "json")
	if err != nil {
		return partStatus{}, err
	}
	var st struct {
		Parts []partStatus `json:"parts"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return partStatus{}, fmt.Errorf("decoding routectl status: %w", err)
	}
	for _, p := range st.Parts {
		if p.Name == "routing" {
			return p, nil
		}
	}
	return partStatus{}, fmt.Errorf("routectl status shows no routing part: %s", out)
}
