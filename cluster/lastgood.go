package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// A configuration's last good content is kept in the state directory, so
// that an agent restarted while its ConfigMap holds a rejected edit (a
// rollout, an OOM kill, a reboot of the pod) keeps running it instead of
// falling back to nothing: for bgp-config, dropping every session.
type lastGood struct {
	Source          string `json:"source"`
	ResourceVersion string `json:"resourceVersion"`
	Config          string `json:"config"`
}

func (w *configWatch[T]) lastGoodPath() string {
	if w.stateDir == "" || w.lastGoodFile == "" {
		return ""
	}
	return filepath.Join(w.stateDir, w.lastGoodFile)
}

// saveLastGood records content as the last good configuration.
func (w *configWatch[T]) saveLastGood(rv, content string) {
	path := w.lastGoodPath()
	if path == "" {
		return
	}
	data, err := json.Marshal(lastGood{Source: w.state.Source, ResourceVersion: rv, Config: content})
	if err == nil {
		tmp := path + ".tmp"
		if err = os.WriteFile(tmp, data, 0o600); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		w.log.Warn("saving the last good "+w.what, "path", path, "err", err)
	}
}

// loadLastGood returns the saved configuration of this ConfigMap, if any.
func (w *configWatch[T]) loadLastGood() (*T, string, error) {
	path := w.lastGoodPath()
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
	if lg.Source != w.state.Source {
		return nil, "", nil // saved for another ConfigMap (the flag changed)
	}
	cfg, err := w.parse([]byte(lg.Config))
	if err != nil {
		return nil, "", fmt.Errorf("%s no longer parses: %w", path, err)
	}
	return cfg, lg.ResourceVersion, nil
}

// forgetLastGood removes the saved configuration: a deleted ConfigMap
// means no configuration, also after a restart.
func (w *configWatch[T]) forgetLastGood() {
	if path := w.lastGoodPath(); path != "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.log.Warn("removing the last good "+w.what, "path", path, "err", err)
		}
	}
}
