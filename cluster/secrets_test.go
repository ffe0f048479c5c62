package cluster

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/events"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/secret"
)

func secretObj(ns, name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// startSecretsWatch runs WatchSecrets on the namespace kube-system of a
// fake API server and returns the channel of published sections.
func startSecretsWatch(t *testing.T, objs ...runtime.Object) (*fake.Clientset, <-chan *snapshot.Secrets) {
	t.Helper()
	client := fake.NewSimpleClientset(objs...)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *snapshot.Secrets, 16)
	done := make(chan error, 1)
	go func() {
		done <- WatchSecrets(ctx, SecretsOptions{Client: client, Namespace: "kube-system", Logger: slog.New(slog.DiscardHandler)},
			func(s *snapshot.Secrets) { out <- s })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("WatchSecrets returned %v after cancel, want nil", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("WatchSecrets did not return within %v of ctx cancel", waitTimeout)
		}
	})
	return client, out
}

func nextSecrets(t *testing.T, ch <-chan *snapshot.Secrets, what string) *snapshot.Secrets {
	t.Helper()
	select {
	case s := <-ch:
		return s
	case <-time.After(waitTimeout):
		t.Fatalf("no Secrets section published for %s", what)
		return nil
	}
}

func entry(pw string) snapshot.SecretEntry {
	return snapshot.SecretEntry{HasPassword: true, Password: secret.New(pw)}
}

// The section holds the password key of every Secret of the agent's
// namespace and nothing of other namespaces, and follows every change of
// it; changes it does not hold publish nothing.
func TestWatchSecrets(t *testing.T) {
	client, ch := startSecretsWatch(t,
		secretObj("kube-system", "bgp-tor83", map[string]string{"password": "k1", "username": "u"}),
		secretObj("kube-system", "token", map[string]string{"token": "t"}),
		secretObj("default", "bgp-tor83", map[string]string{"password": "other-namespace"}),
	)
	ctx := t.Context()
	secrets := client.CoreV1().Secrets("kube-system")
	check := func(s *snapshot.Secrets, want map[string]snapshot.SecretEntry) {
		t.Helper()
		if !s.Synced || s.Namespace != "kube-system" {
			t.Errorf("section synced %v, namespace %q; want synced, kube-system", s.Synced, s.Namespace)
		}
		if diff := cmp.Diff(want, s.ByName); diff != "" {
			t.Errorf("secrets (-want +got):\n%s", diff)
		}
	}
	check(nextSecrets(t, ch, "the first list"), map[string]snapshot.SecretEntry{"bgp-tor83": entry("k1"), "token": {}})

	// Another key changes: nothing the agent reads.
	if _, err := secrets.Update(ctx, secretObj("kube-system", "bgp-tor83", map[string]string{"password": "k1", "username": "v"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-ch:
		t.Errorf("a section was published for a key the agent does not read: %+v", s)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := secrets.Update(ctx, secretObj("kube-system", "bgp-tor83", map[string]string{"password": "k2"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check(nextSecrets(t, ch, "the new password"), map[string]snapshot.SecretEntry{"bgp-tor83": entry("k2"), "token": {}})

	if err := secrets.Delete(ctx, "bgp-tor83", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	check(nextSecrets(t, ch, "the deletion"), map[string]snapshot.SecretEntry{"token": {}})
	select {
	case s := <-ch:
		t.Errorf("an extra section was published: %+v", s)
	case <-time.After(200 * time.Millisecond):
	}
}

// The cache keeps a Secret's identity and password key, nothing else.
func TestTrimSecret(t *testing.T) {
	in := secretObj("kube-system", "bgp", map[string]string{"password": "k", "tls.key": "private"})
	in.Labels = map[string]string{"a": "b"}
	in.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"password":"k"}}`}
	in.ResourceVersion, in.UID = "7", "uid-1"
	in.Type = corev1.SecretTypeBasicAuth
	got, err := trimSecret(in)
	if err != nil {
		t.Fatal(err)
	}
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "bgp", ResourceVersion: "7", UID: "uid-1"},
		Data:       map[string][]byte{"password": []byte("k")},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("trimSecret (-want +got):\n%s", diff)
	}
}

// A peer whose Secret cannot serve gets one Warning Event on the
// bgp-config ConfigMap while the problem lasts, naming the Secret and not
// its content, and another if it comes back after a fix.
func TestSecretEventsPart(t *testing.T) {
	cfg, err := bgpconfig.Parse([]byte("peers:\n- {peer-address: 10.0.0.1, peer-asn: 64512, my-asn: 64512, password-secret: bgp-tor83}\n" +
		"- {peer-address: 10.0.0.2, peer-asn: 64512, my-asn: 64512, password-secret: elsewhere, node-selectors: [{match-labels: {rack: r9}}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	self := &snapshot.Node{Name: "node-a", InternalIPs: nil}
	snap := func(sec map[string]snapshot.SecretEntry, synced bool) *snapshot.Snapshot {
		return &snapshot.Snapshot{
			Cluster: snapshot.Cluster{Synced: true, NodeName: "node-a", Self: self, BGP: snapshot.BGPConfig{Present: true, Config: cfg}},
			Secrets: snapshot.Secrets{Synced: synced, Namespace: "kube-system", ByName: sec},
		}
	}
	rec := events.NewFakeRecorder(10)
	part := SecretEventsPart(rec, bgpConfigName, "node-a")
	reconcile := func(s *snapshot.Snapshot) {
		t.Helper()
		warnings, err := part.Reconcile(t.Context(), s)
		if err != nil || len(warnings) != 0 {
			t.Fatalf("Reconcile = %q, %v; want no warning, no error", warnings, err)
		}
	}
	expect := func(want ...string) {
		t.Helper()
		select {
		case e := <-rec.Events:
			for _, w := range want {
				if !strings.Contains(e, w) {
					t.Errorf("event %q does not mention %q", e, w)
				}
			}
			if strings.Contains(e, "the-key") {
				t.Errorf("event %q shows the password", e)
			}
		default:
			t.Fatalf("no event, want one mentioning %q", want)
		}
	}
	expectNone := func() {
		t.Helper()
		select {
		case e := <-rec.Events:
			t.Errorf("unexpected event %q", e)
		default:
		}
	}

	reconcile(snap(nil, false)) // not read yet: the agent waits, nothing to say
	expectNone()
	reconcile(snap(nil, true))
	expect("Warning", "PasswordSecretUnusable", "node-a", "peers[0] (peer-address 10.0.0.1) not configured", "secret kube-system/bgp-tor83 not found")
	reconcile(snap(nil, true))
	expectNone()
	reconcile(snap(map[string]snapshot.SecretEntry{"bgp-tor83": {}}, true))
	expect(`secret kube-system/bgp-tor83 has no key "password"`)
	reconcile(snap(map[string]snapshot.SecretEntry{"bgp-tor83": entry("the-key")}, true))
	expectNone()
	reconcile(snap(nil, true))
	expect("secret kube-system/bgp-tor83 not found")
}
