// Command ledger is the event-sourced coin ledger: one binary whose subcommands serve the HTTP
// API and the projectors, migrate the database, and run operator and auditor tasks. It is the
// composition root: configuration is read here, once, and passed down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand of the binary.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the HTTP API and the projectors", runServe},
		{"migrate", "apply the database migrations and exit", runMigrate},
		{"token", "mint an access token offline with the signing key for an existing employee", runToken},
		{"users", "create privileged accounts, grant and revoke roles, read the record of role changes", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
			return runUsers(ctx, args, os.Stdin, stdout, stderr)
		}},
		{"seed", "create employees in bulk and write the load tool's user and token files", runSeed},
		{"projections", "operate the projections: status, rebuild NAME", runProjections},
		{"probe", "GET a URL and exit 0 on 200 (container health checks)", runProbe},
		{"audit", "export the global log as NDJSON, or verify hash chains and read models against it", runAudit},
		{"events", "the events on NATS JetStream: republish from a checkpoint, tail them live", runEvents},
		{"version", "print the version and build information (also: ledger --version)", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errUsage marks a command line that could not be understood; its message has been printed.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args[0] = "version"
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			name := "ledger " + c.name
			if (c.name == "audit" || c.name == "projections" || c.name == "events") && len(args) > 1 {
				name += " " + args[1] // the group's command: "ledger audit verify"
			}
			reportFailure(stderr, isTerminal(stderr), name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "ledger: unknown command %q\n\n", args[0])
	printUsage(stderr)
	return 2
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: ledger <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun 'ledger <command> -h' for a command's flags.")
}
