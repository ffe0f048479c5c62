//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
)

// TestChartDryRun renders the Helm chart with its defaults and with each
// values file of its ci/ folder (one per routing mode and masquerade
// choice), and has the lab's real API server admit every object: a
// server-side apply with dryRun=All and strict field validation, so
// schema, defaulting, RBAC escalation checks and admission all run and
// nothing is stored.
func TestChartDryRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	helm, err := helmBinary()
	if err != nil {
		t.Fatal(err)
	}
	chart, err := filepath.Abs(filepath.Join("..", "deploy", "helm", "route-agent"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(chart, "ci", "*-values.yaml"))
	if err != nil || len(files) < 5 {
		t.Fatalf("want the chart's values files in %s/ci, found %v (%v)", chart, files, err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(theLab.Kube.Discovery()))
	for _, f := range append([]string{""}, files...) {
		name := "defaults"
		args := []string{"template", "route-agent", chart, "--namespace", "kube-system"}
		if f != "" {
			name = filepath.Base(f)
			args = append(args, "--values", f)
		}
		t.Run(name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, helm, args...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("helm %v: %v\n%s", args, err, stderr.String())
			}
			kinds, err := dryRunApply(ctx, mapper, stdout.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"ServiceAccount", "ClusterRole", "Role", "DaemonSet"} {
				if kinds[k] == 0 {
					t.Errorf("rendered no %s: %v", k, kinds)
				}
			}
			t.Logf("the API server admitted %v", kinds)
		})
	}
}

// dryRunApply server-side-applies every object of a multi-document YAML
// stream with dryRun=All, and counts them by kind.
func dryRunApply(ctx context.Context, mapper meta.RESTMapper, data []byte) (map[string]int, error) {
	kinds := map[string]int{}
	rest := theLab.Kube.Discovery().RESTClient()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return kinds, nil
			}
			return kinds, fmt.Errorf("decoding the rendered chart: %w", err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
		if err != nil {
			return kinds, fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		p := "/api/" + m.Resource.Version
		if m.Resource.Group != "" {
			p = path.Join("/apis", m.Resource.Group, m.Resource.Version)
		}
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			p = path.Join(p, "namespaces", obj.GetNamespace())
		}
		p = path.Join(p, m.Resource.Resource, obj.GetName())
		body, err := obj.MarshalJSON()
		if err != nil {
			return kinds, err
		}
		err = rest.Patch(types.ApplyPatchType).AbsPath(p).
			Param("fieldManager", "route-agent-chart-test").
			Param("force", "true").
			Param("dryRun", metav1.DryRunAll).
			Param("fieldValidation", "Strict").
			Body(body).Do(ctx).Error()
		if err != nil {
			return kinds, fmt.Errorf("dry-run applying %s %s/%s: %w", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		kinds[gvk.Kind]++
	}
}

// helmBinary is helm from $PATH, else where scripts/install-deps puts it.
func helmBinary() (string, error) {
	if h, err := exec.LookPath("helm"); err == nil {
		return h, nil
	}
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOPATH: %w", err)
	}
	h := filepath.Join(string(bytes.TrimSpace(out)), "bin", "helm")
	if _, err := os.Stat(h); err != nil {
		return "", fmt.Errorf("helm is neither in $PATH nor at %s: run scripts/install-deps", h)
	}
	return h, nil
}
