package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ledger/ledger/projections"
)

// runProjections runs the operators' subcommands.
func runProjections(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintln(stderr, "usage: ledger projections <status|rebuild> [flags]")
		fmt.Fprintln(stderr, "\n  status          each projection, and the event relay: active version, checkpoint, events behind, lag, whether a process runs it, state")
		fmt.Fprintln(stderr, "  rebuild NAME    build NAME's newest version beside the live one, switch reads to it, retire the old")
		fmt.Fprintln(stderr, "\nRun 'ledger projections <command> -h' for its flags.")
	}
	return subcommand("projections", args, stderr, usage, map[string]func([]string) error{
		"status":  func(a []string) error { return runProjectionsStatus(ctx, a, stdout, stderr) },
		"rebuild": func(a []string) error { return runProjectionsRebuild(ctx, a, stdout, stderr) },
	})
}

func runProjectionsStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("projections status", stderr)
	dbURL := databaseURLFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dbURL == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "ledger projections status: need a database (APP_POSTGRES_URL or --database-url) and no arguments")
		return errUsage
	}
	pool, err := auditPool(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	st, err := projections.Statuses(ctx, pool)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tCHECKPOINT\tBEHIND\tLAG\tRUNNING\tSTATE")
	for _, s := range st {
		state := s.State
		if s.LastError != "" {
			state += ": " + s.LastError
		}
		version, running := "-", "no process"
		if s.ActiveVersion > 0 {
			version = fmt.Sprintf("v%d", s.ActiveVersion)
		}
		if s.Active {
			running = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%dms\t%s\t%s\n", s.Name, version, s.Checkpoint, s.EventsBehind, s.LagMs, running, state)
	}
	return tw.Flush()
}

func runProjectionsRebuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("projections rebuild", stderr)
	dbURL := databaseURLFlag(fs)
	page := fs.Int("page-size", 10_000, "events per read of the log")
	grace := fs.Duration("grace", 3*time.Second, "how long to keep projecting the new version after the switch, while serving processes take it over")
	names := projectionNameList()
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ledger projections rebuild NAME [flags]\n\nNAME is one of: %s\n\nflags:\n", names)
		fs.PrintDefaults()
	}
	// Flags may come before or after the name.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		name = ""
	}
	if *dbURL == "" || name == "" || *page <= 0 {
		fmt.Fprintf(stderr, "usage: ledger projections rebuild NAME [--page-size N] [--grace D] (NAME: %s; needs APP_POSTGRES_URL or --database-url)\n", names)
		return errUsage
	}
	if _, ok := projections.Latest(name); !ok {
		fmt.Fprintf(stderr, "ledger projections rebuild: no projection is named %q (%s)\n", name, names)
		return errUsage
	}
	pool, err := auditPool(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	// Logs are JSON lines, as serve writes them; on a terminal the progress display tells what
	// the info lines would, and only warnings and errors are logged.
	terminal := isTerminal(stderr)
	level := slog.LevelInfo
	if terminal {
		level = slog.LevelWarn
	}
	out := &lockedWriter{w: stderr} // the rebuild logs from its projector's goroutines
	log := newLogger(out, level)
	bar := newProgress(out, terminal, "rebuild "+name, "events")
	rep, err := projections.Rebuild(ctx, pool, name, projections.RebuildOptions{
		Log: log, PageSize: *page, Grace: *grace, Progress: bar.rebuildPhases(),
	})
	bar.finish()
	if errors.Is(err, projections.ErrNothingToRebuild) {
		fmt.Fprintf(stdout, "%s: %v\n", name, err)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s rebuilt: v%d -> v%d, %d events over %d accounts (%d rows) in %v (%.0f events/s); reads switched; v%d retired; total %v\n",
		rep.Name, rep.From, rep.To, rep.Events, rep.Accounts, rep.Rows, rep.Build.Round(time.Millisecond),
		rep.EventsPerSecond, rep.From, rep.Total.Round(time.Millisecond))
	return nil
}

// projectionNameList lists the projections an operator can name, "balance, inventory, history".
func projectionNameList() string {
	var names []string
	for _, p := range projections.All() {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}
