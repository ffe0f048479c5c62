package snapshot

import (
	"fmt"
	"maps"

	bgpconfig "routeagent.io/route-agent/bgp/config"
	"routeagent.io/route-agent/secret"
)

// PasswordKey is the key of a Secret that holds a BGP peer's TCP MD5
// password, as in MetalLB's passwordSecret.
const PasswordKey = "password"

// Secrets is the section built from the Secrets of the agent's own
// namespace, which a bgp-config peer's password-secret names. Of each
// Secret only its PasswordKey is kept; the section's source replaces it
// whole.
type Secrets struct {
	// Synced is true once the namespace's Secrets have been listed; until
	// then a Secret that is not here may just not have been read yet.
	Synced bool
	// Namespace is the agent's namespace, which the Secrets are read from.
	Namespace string
	// ByName holds every Secret of Namespace, by name.
	ByName map[string]SecretEntry
}

// SecretEntry is what the agent keeps of one Secret.
type SecretEntry struct {
	// HasPassword reports whether the Secret has the key PasswordKey.
	HasPassword bool
	Password    secret.Value
}

// Password returns the TCP MD5 key held by Secret name, or an error that
// says why it cannot be used. Errors name the Secret and the key, never
// the content.
func (s *Secrets) Password(name string) (secret.Value, error) {
	ref := s.Namespace + "/" + name
	if !s.Synced {
		return secret.Value{}, fmt.Errorf("secret %s: the Secrets of namespace %s have not been read yet", ref, s.Namespace)
	}
	e, ok := s.ByName[name]
	switch {
	case !ok:
		return secret.Value{}, fmt.Errorf("secret %s not found", ref)
	case !e.HasPassword:
		return secret.Value{}, fmt.Errorf("secret %s has no key %q", ref, PasswordKey)
	case !e.Password.IsSet():
		return secret.Value{}, fmt.Errorf("key %q of secret %s is empty", PasswordKey, ref)
	case e.Password.Len() > bgpconfig.MaxPasswordLen:
		return secret.Value{}, fmt.Errorf("key %q of secret %s is %d bytes long, TCP MD5 keys are at most %d",
			PasswordKey, ref, e.Password.Len(), bgpconfig.MaxPasswordLen)
	}
	return e.Password, nil
}

// Same reports whether two Secrets sections hold the same view.
func (s *Secrets) Same(o *Secrets) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Synced == o.Synced && s.Namespace == o.Namespace && maps.Equal(s.ByName, o.ByName)
}
