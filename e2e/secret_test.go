//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/e2e/lab"
)

// secretName is the Secret the test's bgp-config names for tor83.
const secretName = "bgp-tor83"

// tor83Key is the lab's TCP MD5 key of rack 83, read from the lab's own
// bgp-config.
func tor83Key(t *testing.T, l *lab.Lab) string {
	t.Helper()
	cfg, err := bgpconfig.Parse([]byte(lab.BGPConfig))
	if err != nil {
		t.Fatalf("the lab's bgp-config: %v", err)
	}
	for _, p := range cfg.Peers {
		if p.Address == l.Nodes[2].Router.Addr && p.Password.IsSet() {
			return p.Password.Reveal()
		}
	}
	t.Fatal("the lab's bgp-config has no password for tor83")
	return ""
}

// setSecret creates or replaces the Secret with key as its password.
func setSecret(ctx context.Context, l *lab.Lab, key string) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: secretName},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{"password": []byte(key)},
	}
	secrets := l.Kube.CoreV1().Secrets("kube-system")
	_, err := secrets.Update(ctx, s, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("writing secret %s: %w", secretName, err)
	}
	return nil
}

func deleteSecret(ctx context.Context, l *lab.Lab) error {
	err := l.Kube.CoreV1().Secrets("kube-system").Delete(ctx, secretName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting secret %s: %w", secretName, err)
	}
	return nil
}

// bgpWarnings returns the warnings of n's bgp part in routectl status.
func bgpWarnings(ctx context.Context, l *lab.Lab, n *lab.Node) ([]string, error) {
	out, err := l.Routectl(ctx, n, "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var s struct {
		Parts []struct {
			Name     string   `json:"name"`
			Warnings []string `json:"warnings"`
		} `json:"parts"`
	}
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("decoding routectl status of %s: %w", n.Name, err)
	}
	for _, p := range s.Parts {
		if p.Name == "bgp" {
			return p.Warnings, nil
		}
	}
	return nil, fmt.Errorf("routectl status of %s has no bgp part", n.Name)
}

// sessionWith returns n's session state with r, "" when n holds none.
func sessionWith(ctx context.Context, l *lab.Lab, n *lab.Node, r *lab.Router) (string, error) {
	rows, err := l.Peers(ctx, n)
	if err != nil {
		return "", err
	}
	for _, row := range rows {
		if row.PeerAddress == r.Addr.String() {
			return row.SessionState, nil
		}
	}
	return "", nil
}

// A peer's password-secret supplies its TCP MD5 key: tor83's session runs
// on the key of a Secret, follows the Secret when it changes or goes, and
// the key shows in no log, routectl output, Event or metric.
func TestPasswordSecret(t *testing.T) {
	ctx := testContext(t)
	l := theLab
	n := l.Nodes[2] // rack83-node1: its ToR requires TCP MD5
	r := n.Router
	key := tor83Key(t, l)
	const wrongKey = "not-tor83s-key-61f3"
	withSecret := strings.Replace(lab.BGPConfig, "password: "+key, "password-secret: "+secretName, 1)
	if withSecret == lab.BGPConfig {
		t.Fatal("the lab's bgp-config has no inline rack-83 password to replace")
	}
	// Cleanups run last first: the lab's own config is back, and the
	// session established on it, before the Secret goes.
	t.Cleanup(func() {
		if err := deleteSecret(context.Background(), l); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() {
		if err := l.WaitEstablished(context.Background(), n, r, settle); err != nil {
			t.Errorf("after restoring the lab's bgp-config: %v", err)
		}
	})
	restoreConfigAfter(t, l)

	if err := l.WaitEstablished(ctx, n, r, settle); err != nil {
		t.Fatal(err)
	}
	before, err := sessionHistory(ctx, l, n)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("the same key from a Secret keeps the session", func(t *testing.T) {
		if err := setSecret(ctx, l, key); err != nil {
			t.Fatal(err)
		}
		// The agent's Secret watch delivers in milliseconds; the config
		// follows well after it.
		time.Sleep(2 * time.Second)
		rv, err := l.ApplyBGPConfig(ctx, withSecret)
		if err != nil {
			t.Fatal(err)
		}
		err = lab.WaitFor(ctx, settle, n.Name+" to apply resourceVersion "+rv, func() error {
			s, err := status(ctx, l, n)
			if err != nil {
				return err
			}
			if s.BGPConfig.AppliedResourceVersion != rv {
				return fmt.Errorf("applied %+v", s.BGPConfig)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Long enough for a reset to show on both ends.
		time.Sleep(3 * time.Second)
		after, err := sessionHistory(ctx, l, n)
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Errorf("the session bounced when its key moved into a Secret: before %s; after %s", before, after)
		}
	})

	t.Run("a new key in the Secret applies", func(t *testing.T) {
		if err := setSecret(ctx, l, wrongKey); err != nil {
			t.Fatal(err)
		}
		err := lab.WaitFor(ctx, settle, n.Name+" to log the new key", func() error {
			if !strings.Contains(l.AgentLog(n, 1<<20), `msg="bgp peer updated" peer=`+r.Addr.String()+" changed=password ") {
				return fmt.Errorf("no such line")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = lab.WaitFor(ctx, settle, "the session on a key tor83 does not have to go down", func() error {
			st, err := sessionWith(ctx, l, n, r)
			if err != nil {
				return err
			}
			if st == "established" || st == "" {
				return fmt.Errorf("session %q", st)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Two connect retries (5 s apart) fail with that key.
		for deadline := time.Now().Add(12 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if st, err := sessionWith(ctx, l, n, r); err != nil || st == "established" {
				t.Fatalf("session %q (err %v) with a key tor83 does not have", st, err)
			}
		}
		if err := setSecret(ctx, l, key); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitEstablished(ctx, n, r, settle); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a missing Secret leaves that session unconfigured, and says so", func(t *testing.T) {
		if err := deleteSecret(ctx, l); err != nil {
			t.Fatal(err)
		}
		const problem = "secret kube-system/" + secretName + " not found"
		err := lab.WaitFor(ctx, settle, n.Name+" to drop the session and warn", func() error {
			st, err := sessionWith(ctx, l, n, r)
			if err != nil {
				return err
			}
			if st != "" {
				return fmt.Errorf("routectl still shows a session with %s: %q", r.Name, st)
			}
			ws, err := bgpWarnings(ctx, l, n)
			if err != nil {
				return err
			}
			for _, w := range ws {
				if strings.Contains(w, "peers[1] (peer-address "+r.Addr.String()+") not configured") && strings.Contains(w, problem) {
					return nil
				}
			}
			return fmt.Errorf("bgp warnings %q", ws)
		})
		if err != nil {
			t.Fatal(err)
		}
		err = lab.WaitFor(ctx, settle, "a PasswordSecretUnusable event on bgp-config", func() error {
			evs, err := l.Kube.EventsV1().Events("kube-system").List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=bgp-config"})
			if err != nil {
				return err
			}
			var notes []string
			for _, e := range evs.Items {
				if e.Type == "Warning" && e.Reason == "PasswordSecretUnusable" && strings.Contains(e.Note, n.Name) && strings.Contains(e.Note, problem) {
					if e.Related == nil || e.Related.Kind != "Secret" || e.Related.Name != secretName {
						return lab.Permanent(fmt.Errorf("event %q relates to %+v, want the Secret", e.Note, e.Related))
					}
					return nil
				}
				notes = append(notes, e.Reason+": "+e.Note)
			}
			return fmt.Errorf("events: %q", notes)
		})
		if err != nil {
			t.Fatal(err)
		}
		// The other nodes' sessions are none of this.
		for _, other := range l.Nodes[:2] {
			if err := l.WaitEstablished(ctx, other, other.Router, settle); err != nil {
				t.Error(err)
			}
		}
		if err := setSecret(ctx, l, key); err != nil {
			t.Fatal(err)
		}
		if err := l.WaitEstablished(ctx, n, r, settle); err != nil {
			t.Fatal(err)
		}
		err = lab.WaitFor(ctx, settle, r.Name+" to hold "+n.PodCIDR.String()+" again", func() error {
			nh, err := r.BestNextHop(ctx, n.PodCIDR.String())
			if err != nil {
				return err
			}
			if nh != n.IP.String() {
				return fmt.Errorf("next hop %q", nh)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the key shows nowhere", func(t *testing.T) {
		var seen []string
		look := func(where, text string) {
			for _, k := range []string{key, wrongKey} {
				if strings.Contains(text, k) {
					seen = append(seen, where)
				}
			}
		}
		for _, node := range l.Nodes {
			look(node.Name+"'s agent log", l.AgentLog(node, 1<<20))
			for _, args := range [][]string{
				{"status"}, {"status", "-o", "json"}, {"bgp", "peers", "-o", "json"},
				{"bgp", "routes", "advertised", "-o", "json"}, {"bgp", "routes", "received", "-o", "json"},
				{"routes", "-o", "json"}, {"services", "-o", "json"},
			} {
				out, err := l.Routectl(ctx, node, args...)
				if err != nil {
					t.Error(err)
				}
				look(fmt.Sprintf("routectl %s on %s", strings.Join(args, " "), node.Name), string(out))
			}
			m, err := l.Metrics(ctx, node)
			if err != nil {
				t.Error(err)
			}
			look(node.Name+"'s metrics", m)
		}
		evs, err := l.Kube.EventsV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			look("event "+e.Namespace+"/"+e.Name, e.Note)
		}
		if len(seen) > 0 {
			t.Errorf("a TCP MD5 key shows in: %s", strings.Join(seen, ", "))
		}
		if len(evs.Items) == 0 {
			t.Error("no event at all to look through")
		}
	})
}
