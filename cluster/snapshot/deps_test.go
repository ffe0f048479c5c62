package snapshot

import (
	"os/exec"
	"strings"
	"testing"
)

// The planners read snapshots and nothing of client-go: a planner that
// linked informers would be tempted to read the API itself.
func TestPlannersDoNotLinkClientGo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	pkgs := []string{
		"routeagent.io/route-agent/cluster/snapshot",
		"routeagent.io/route-agent/bgp",
		"routeagent.io/route-agent/routing",
		"routeagent.io/route-agent/engine",
	}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "k8s.io/client-go") {
			t.Errorf("a planner links %s", dep)
		}
	}
}
