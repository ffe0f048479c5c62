package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestFlagsFromEnv(t *testing.T) {
	newFlags := func() (*pflag.FlagSet, *string, *bool, *time.Duration) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		mode := fs.String("routing-mode", "native", "")
		direct := fs.Bool("auto-direct-node-routes", true, "")
		resync := fs.Duration("resync-period", time.Minute, "")
		return fs, mode, direct, resync
	}
	t.Setenv("ROUTE_AGENT_ROUTING_MODE", "tunnel")
	t.Setenv("ROUTE_AGENT_AUTO_DIRECT_NODE_ROUTES", "false")
	fs, mode, direct, resync := newFlags()
	if err := fs.Parse([]string{"--auto-direct-node-routes=true"}); err != nil {
		t.Fatal(err)
	}
	if err := flagsFromEnv(fs); err != nil {
		t.Fatal(err)
	}
	if *mode != "tunnel" || !*direct || *resync != time.Minute {
		t.Errorf("mode %q direct %v resync %v: want the env's tunnel, the command line's true, the default", *mode, *direct, *resync)
	}

	t.Setenv("ROUTE_AGENT_RESYNC_PERIOD", "soon")
	fs, _, _, _ = newFlags()
	_ = fs.Parse(nil)
	err := flagsFromEnv(fs)
	if err == nil || !strings.Contains(err.Error(), `ROUTE_AGENT_RESYNC_PERIOD="soon" (for --resync-period)`) {
		t.Errorf("bad env value: err = %v, want one naming the variable, value and flag", err)
	}
}

func TestFlagsFromEnvLeavesCommandFlags(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	version := fs.Bool("version", false, "")
	help := fs.Bool("help", false, "")
	t.Setenv("ROUTE_AGENT_VERSION", "1.2.3")
	t.Setenv("ROUTE_AGENT_HELP", "true")
	_ = fs.Parse(nil)
	if err := flagsFromEnv(fs); err != nil {
		t.Fatal(err)
	}
	if *version || *help {
		t.Errorf("version %v help %v: the environment must not set cobra's command flags", *version, *help)
	}
}
