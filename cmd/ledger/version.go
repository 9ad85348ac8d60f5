package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// runVersion prints the version and build information the Go toolchain stamped into the binary.
func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: ledger version")
		return errUsage
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintf(stdout, "ledger (no build information) %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
	_, err := io.WriteString(stdout, versionText(info))
	return err
}

// versionText is the version report of a build: the module version, then the source revision,
// its time and whether the tree had uncommitted changes (as `go build` records them from git),
// and the Go release and platform.
func versionText(info *debug.BuildInfo) string {
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	unknown := func(v string) string {
		if v == "" {
			return "unknown"
		}
		return v
	}
	return fmt.Sprintf("ledger %s\n  revision  %s\n  time      %s\n  modified  %s\n  go        %s %s/%s\n",
		unknown(info.Main.Version), unknown(settings["vcs.revision"]), unknown(settings["vcs.time"]),
		unknown(settings["vcs.modified"]), info.GoVersion, unknown(settings["GOOS"]), unknown(settings["GOARCH"]))
}
