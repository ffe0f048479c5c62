package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bgpconfig "routeagent.io/route-agent/bgp/config"
)

// lastGoodFile holds the last bgp-config content that parsed, so that an
// agent restarted while the ConfigMap holds a rejected edit (a rollout, an
// OOM kill, a reboot of the pod) keeps running it instead of dropping every
// session.
const lastGoodFile = "bgp-config.last-good.json"

type lastGood struct {
	Source          string `json:"source"`
	ResourceVersion string `json:"resourceVersion"`
	Config          string `json:"config"`
}

func (b *builder) lastGoodPath() string {
	if b.opts.StateDir == "" {
		return ""
	}
	return filepath.Join(b.opts.StateDir, lastGoodFile)
}

// saveLastGood records content as the last good bgp-config.
func (b *builder) saveLastGood(rv, content string) {
	path := b.lastGoodPath()
	if path == "" {
		return
	}
	data, err := json.Marshal(lastGood{Source: b.cfg.Source, ResourceVersion: rv, Config: content})
	if err == nil {
		tmp := path + ".tmp"
		if err = os.WriteFile(tmp, data, 0o600); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		b.log.Warn("saving the last good bgp-config", "path", path, "err", err)
	}
}

// loadLastGood returns the saved configuration of this ConfigMap, if any.
func (b *builder) loadLastGood() (*bgpconfig.Config, string, error) {
	path := b.lastGoodPath()
	if path == "" {
		return nil, "", nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	var lg lastGood
	if err := json.Unmarshal(data, &lg); err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	if lg.Source != b.cfg.Source {
		return nil, "", nil // saved for another ConfigMap (--bgp-config changed)
	}
	cfg, err := bgpconfig.Parse([]byte(lg.Config))
	if err != nil {
		return nil, "", fmt.Errorf("%s no longer parses: %w", path, err)
	}
	return cfg, lg.ResourceVersion, nil
}

// forgetLastGood removes the saved configuration: a deleted ConfigMap
// means no peers, also after a restart.
func (b *builder) forgetLastGood() {
	if path := b.lastGoodPath(); path != "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			b.log.Warn("removing the last good bgp-config", "path", path, "err", err)
		}
	}
}
