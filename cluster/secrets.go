package cluster

import (
	"context"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"

	"routeagent.io/route-agent/bgp"
	"routeagent.io/route-agent/cluster/snapshot"
	"routeagent.io/route-agent/engine"
	"routeagent.io/route-agent/secret"
)

// SecretsOptions says which Secrets to watch.
type SecretsOptions struct {
	Client kubernetes.Interface
	// Namespace is the agent's own: a bgp-config peer's password-secret
	// names a Secret there, and the agent may read no other.
	Namespace string
	Logger    *slog.Logger
}

// WatchSecrets runs an informer on the Secrets of opts.Namespace and calls
// publish with the snapshot's Secrets section once the cache has synced,
// and again whenever what the section holds changes (a Secret coming or
// going, its password key). publish runs on WatchSecrets's goroutine;
// WatchSecrets returns when ctx ends.
func WatchSecrets(ctx context.Context, opts SecretsOptions, publish func(*snapshot.Secrets)) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	factory := informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithNamespace(opts.Namespace))
	inf := factory.Core().V1().Secrets()
	// Every agent caches its namespace's Secrets: keep only the password
	// key of each, the rest is none of the agent's business.
	if err := inf.Informer().SetTransform(trimSecret); err != nil {
		return fmt.Errorf("watching secrets of namespace %s: %w", opts.Namespace, err)
	}
	dirty := engine.NewTrigger()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { dirty.Fire() },
		UpdateFunc: func(any, any) { dirty.Fire() },
		DeleteFunc: func(any) { dirty.Fire() },
	}
	if _, err := inf.Informer().AddEventHandler(handler); err != nil {
		return fmt.Errorf("watching secrets of namespace %s: %w", opts.Namespace, err)
	}
	lister := inf.Lister().Secrets(opts.Namespace)
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache for %v of namespace %s did not sync: %w", typ, opts.Namespace, ctx.Err())
		}
	}

	dirty.Fire()
	var last *snapshot.Secrets
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-dirty.C():
			objs, err := lister.List(labels.Everything())
			if err != nil { // the cache lister never fails; keep the last section if it does
				log.Error("listing secrets from cache", "namespace", opts.Namespace, "err", err)
				continue
			}
			sec := secretsFrom(opts.Namespace, objs)
			// Most Secret updates (a token refreshed, another key) change
			// nothing the agent reads; only a change is published.
			if !sec.Same(last) {
				publish(sec)
				last = sec
			}
		}
	}
}

func secretsFrom(namespace string, objs []*corev1.Secret) *snapshot.Secrets {
	s := &snapshot.Secrets{Synced: true, Namespace: namespace, ByName: make(map[string]snapshot.SecretEntry, len(objs))}
	for _, o := range objs {
		// A copy: the snapshot must not alias the cache.
		pw, ok := o.Data[snapshot.PasswordKey]
		s.ByName[o.Name] = snapshot.SecretEntry{HasPassword: ok, Password: secret.New(string(pw))}
	}
	return s
}

// trimSecret keeps of a Secret what the informer and the snapshot need:
// its identity and its password key.
func trimSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	t := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Name: s.Name, Namespace: s.Namespace, UID: s.UID, ResourceVersion: s.ResourceVersion,
	}}
	if pw, ok := s.Data[snapshot.PasswordKey]; ok {
		t.Data = map[string][]byte{snapshot.PasswordKey: pw}
	}
	return t, nil
}

// SecretEventsPart records a Warning Event PasswordSecretUnusable on the
// bgp-config ConfigMap for each peer selecting this node whose
// password-secret cannot serve (routectl status lists the same as the bgp
// part's warnings), so that `kubectl describe configmap` shows it as it
// shows a rejected config. A problem is recorded once while it lasts, and
// again if it comes back after a fix. Events name the Secret, never its
// content.
func SecretEventsPart(rec events.EventRecorder, bgpConfig types.NamespacedName, node string) engine.Part {
	type unusable struct {
		namespace string // of the Secrets
		problems  []bgp.PeerSecretProblem
	}
	var reported map[string]bool
	regarding := &corev1.ObjectReference{APIVersion: "v1", Kind: "ConfigMap", Namespace: bgpConfig.Namespace, Name: bgpConfig.Name}
	return engine.Func("bgp-secrets", func(s *snapshot.Snapshot) (unusable, []string) {
		// The bgp part's warnings already list them: none here.
		return unusable{namespace: s.Secrets.Namespace, problems: bgp.PeerSecretProblems(s)}, nil
	}, func(_ context.Context, u unusable) error {
		now := map[string]bool{}
		for _, p := range u.problems {
			msg := p.String()
			now[msg] = true
			if reported[msg] {
				continue
			}
			related := &corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: u.namespace, Name: p.Peer.PasswordSecret}
			rec.Eventf(regarding, related, corev1.EventTypeWarning, "PasswordSecretUnusable", "ConfigurePeer",
				"route-agent on node %s: %s", node, msg)
		}
		reported = now
		return nil
	})
}
