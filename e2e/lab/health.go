package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HealthAddr is where the lab's agents serve /healthz and /readyz: the
// agent's default, loopback inside each node's namespace, as the
// DaemonSet's httpGet probes reach it with hostNetwork.
const HealthAddr = "127.0.0.1:9956"

// Probe fetches path (/healthz or /readyz) from n's agent from inside n's
// namespace, as the kubelet's probe would, and returns the status code and
// body.
func (l *Lab) Probe(ctx context.Context, n *Node, path string) (int, string, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: nsDialer(n.NS)}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+HealthAddr+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s of %s: %w", path, n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// AgentGet fetches url (one of the agent's HTTP listeners) from inside n's
// namespace and returns the body of a 200 answer.
func (l *Lab) AgentGet(ctx context.Context, n *Node, url string, timeout time.Duration) ([]byte, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: nsDialer(n.NS)}, Timeout: timeout}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s of %s: %w", url, n.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s of %s: %s: %s", url, n.Name, resp.Status, b)
	}
	return b, err
}
