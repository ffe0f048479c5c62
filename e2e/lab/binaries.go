package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
)

var kubernetesRequire = regexp.MustCompile(`(?m)^\s*k8s\.io/kubernetes (v\S+)`)

// KubeAPIServer returns a kube-apiserver built from the e2e/tools module
// at the version its go.mod requires. The binary is cached outside the
// repository, keyed by version, because the first build takes minutes.
func KubeAPIServer(ctx context.Context, repoRoot string, out io.Writer) (string, error) {
	return kubernetesTool(ctx, repoRoot, "kube-apiserver", out)
}

// KubeProxy returns a kube-proxy built and cached as KubeAPIServer is: the
// lab's nodes run the real one, so LoadBalancer traffic takes the path it
// takes in a cluster.
func KubeProxy(ctx context.Context, repoRoot string, out io.Writer) (string, error) {
	return kubernetesTool(ctx, repoRoot, "kube-proxy", out)
}

// kubernetesTool builds k8s.io/kubernetes/cmd/<name>, one of the tools
// module's tool directives, into the user cache, once per version.
func kubernetesTool(ctx context.Context, repoRoot, name string, out io.Writer) (string, error) {
	tools := filepath.Join(repoRoot, "e2e", "tools")
	mod, err := os.ReadFile(filepath.Join(tools, "go.mod"))
	if err != nil {
		return "", err
	}
	m := kubernetesRequire.FindSubmatch(mod)
	if m == nil {
		return "", fmt.Errorf("%s/go.mod does not require k8s.io/kubernetes", tools)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(cache, "route-agent", name+"-"+string(m[1]))
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	if out != nil {
		fmt.Fprintf(out, "building %s %s into %s (several minutes, once)\n", name, m[1], bin)
	}
	tmp := bin + ".partial"
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "k8s.io/kubernetes/cmd/"+name)
	cmd.Dir = tools
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("building %s: %w", name, err)
	}
	return bin, os.Rename(tmp, bin)
}

// BuildAgent builds route-agent and routectl from the repository into dir.
func BuildAgent(ctx context.Context, repoRoot, dir string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/route-agent", "./cmd/routectl")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building route-agent and routectl: %w: %s", err, out)
	}
	return nil
}
