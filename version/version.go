// Package version says which build of route-agent and routectl is running.
package version

import (
	"runtime/debug"
	"strings"
)

// Version is the release, set when building:
//
//	go build -ldflags "-X routeagent.io/route-agent/version.Version=v1.2.0"
//
// `make build` sets it from `git describe --tags --always --dirty`.
var Version = "dev"

// Commit is the revision the binary was built from: set by -ldflags as
// Version is, or else the one Go records when it builds inside a git
// checkout; "" when neither is known (test binaries, `go run` outside git).
var Commit = ""

func init() {
	if Commit == "" {
		Commit = buildCommit()
	}
}

// buildCommit reads the revision Go stamps into binaries built from a git
// checkout (-buildvcs, on by default), with "-dirty" when the tree had
// uncommitted changes, as git describe marks them.
func buildCommit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && modified == "true" {
		rev += "-dirty"
	}
	return rev
}

// String is this binary's version as it prints it; see Format.
func String() string {
	return Format(Version, Commit)
}

// Format prints a version and a commit as "v1.2.0 (commit 0356817c1a2b)",
// the commit shortened to 12 hex digits (keeping a "-dirty" mark), or the
// bare version when the commit is not known. routectl prints the agent's
// version with it too, so both read the same.
func Format(version, commit string) string {
	if commit == "" {
		return version
	}
	rev, dirty := commit, ""
	if r, ok := strings.CutSuffix(commit, "-dirty"); ok {
		rev, dirty = r, "-dirty"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return version + " (commit " + rev + dirty + ")"
}
