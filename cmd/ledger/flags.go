package main

import (
	"flag"
	"io"
	"os"
)

// newFlagSet returns a subcommand's flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ledger "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// env returns the first non-empty of the named environment variables. This file and the
// composition root are the only places that read the environment.
func env(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func databaseURLFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", env("APP_POSTGRES_URL", "LEDGER_DATABASE_URL"),
		"PostgreSQL URL (env APP_POSTGRES_URL or LEDGER_DATABASE_URL)")
}
