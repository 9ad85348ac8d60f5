package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// newFlagSet returns a subcommand's flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ledger "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses a command line; the flag package has printed what is wrong with one that
// does not parse, which is a usage error, and the flags asked for with -h, which is not.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
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

// bindDatabaseURL binds --database-url to p: the flag every command that reaches the database
// takes.
func bindDatabaseURL(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "database-url", env("APP_POSTGRES_URL", "LEDGER_DATABASE_URL"),
		"PostgreSQL URL (env APP_POSTGRES_URL or LEDGER_DATABASE_URL)")
}

// databaseURLFlag is bindDatabaseURL for a command that keeps no configuration struct.
func databaseURLFlag(fs *flag.FlagSet) *string {
	p := new(string)
	bindDatabaseURL(fs, p)
	return p
}

// subcommand runs the one of cmds that args[0] names, for a command group (audit, projections,
// users): no name, or one it does not know, prints the group's usage and is a usage error; -h
// prints it and succeeds.
func subcommand(group string, args []string, stderr io.Writer, usage func(), cmds map[string]func(args []string) error) error {
	if len(args) == 0 {
		usage()
		return errUsage
	}
	if run, ok := cmds[args[0]]; ok {
		return run(args[1:])
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage()
		return nil
	}
	fmt.Fprintf(stderr, "ledger %s: unknown command %q\n\n", group, args[0])
	usage()
	return errUsage
}
