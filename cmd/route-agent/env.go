package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// envPrefix names the environment variables that set flags, so that a
// DaemonSet (or a Helm chart) can set any flag from its env: section:
// --tunnel-protocol is ROUTE_AGENT_TUNNEL_PROTOCOL.
const envPrefix = "ROUTE_AGENT_"

func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// flagsFromEnv sets every flag not given on the command line from its
// environment variable; the command line wins. It runs after parsing.
func flagsFromEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		// cobra's own flags are commands, not settings: a ROUTE_AGENT_VERSION
		// in a pod's env (an image tag, say) is no bool and must not fail
		// the start.
		if f.Name == "help" || f.Name == "version" {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || f.Changed || err != nil {
			return
		}
		if serr := f.Value.Set(v); serr != nil {
			err = fmt.Errorf("%s=%q (for --%s): %w", envName(f.Name), v, f.Name, serr)
		}
	})
	return err
}
