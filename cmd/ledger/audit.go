package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
)

// errMismatch is the failure of a verification that found something; its report is printed.
var errMismatch = errors.New("the log and the read models disagree")

// runAudit runs the auditors' subcommands.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintln(stderr, "usage: ledger audit <export|verify> [flags]")
		fmt.Fprintln(stderr, "\n  export  write the global log as newline-delimited JSON, one event per line with its checkpoint")
		fmt.Fprintln(stderr, "  verify  replay the whole log: hash chains, account folds, and the read models against them")
		fmt.Fprintln(stderr, "\nRun 'ledger audit <command> -h' for its flags.")
	}
	return subcommand("audit", args, stderr, usage, map[string]func([]string) error{
		"export": func(a []string) error { return runAuditExport(ctx, a, stdout, stderr) },
		"verify": func(a []string) error { return runAuditVerify(ctx, a, stdout, stderr) },
	})
}

var _ flag.Value = (*checkpointFlag)(nil)

// checkpointFlag is a flag holding a log checkpoint, "transaction:position".
type checkpointFlag struct{ c eventstore.Checkpoint }

func (f *checkpointFlag) String() string { return f.c.String() }

func (f *checkpointFlag) Set(s string) error {
	c, err := eventstore.ParseCheckpoint(s)
	if err != nil {
		return errors.New("want transaction:position, as the exported lines carry")
	}
	f.c = c
	return nil
}

func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit export", stderr)
	dbURL := databaseURLFlag(fs)
	var after, until checkpointFlag
	fs.Var(&after, "after", "export the events after this checkpoint (default: from the start of the log)")
	fs.Var(&until, "until", "export up to and including this checkpoint (default: the end of the readable log at the start)")
	out := fs.String("out", "-", "file to write; - is standard output")
	page := fs.Int("page-size", 10_000, "events per read of the log")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dbURL == "" || *page <= 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "ledger audit export: need a database (APP_POSTGRES_URL or --database-url), --page-size > 0 and no arguments")
		return errUsage
	}
	pool, err := auditPool(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()

	var w io.Writer = stdout
	name := "standard output"
	var file *os.File
	if *out != "-" {
		if file, err = os.Create(*out); err != nil {
			return err
		}
		defer func() {
			if file != nil {
				_ = file.Close() // the export failed; its error is the one to report
			}
		}()
		w, name = file, *out
	}
	began := time.Now()
	bar := newProgress(stderr, isTerminal(stderr), "audit export", "events")
	opts := audit.ExportOptions{After: after.c, Until: until.c, PageSize: *page, Progress: bar.report}
	if file == nil && isTerminal(stdout) && isTerminal(stderr) {
		opts.Progress = nil // the lines themselves show on the terminal; a bar would cut through them
	}
	res, err := audit.Export(ctx, eventstore.New(pool), w, opts)
	bar.finish()
	if err != nil {
		return fmt.Errorf("export stopped after %d events (resume with --after %s): %w", res.Events, res.Last, err)
	}
	if file != nil {
		err, file = file.Close(), nil
		if err != nil {
			return fmt.Errorf("close %s: %w", name, err)
		}
	}
	// The summary goes to stderr: stdout may be the export itself.
	fmt.Fprintf(stderr, "exported %d events to %s in %s; the last checkpoint is %s\n",
		res.Events, name, time.Since(began).Round(time.Millisecond), res.Last)
	return nil
}

func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit verify", stderr)
	dbURL := databaseURLFlag(fs)
	page := fs.Int("page-size", 20_000, "events per read of the log")
	workers := fs.Int("workers", 0, "goroutines checking hashes and decoding events (default: one per CPU)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dbURL == "" || *page <= 0 || *workers < 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "ledger audit verify: need a database (APP_POSTGRES_URL or --database-url), --page-size > 0, --workers >= 0 and no arguments")
		return errUsage
	}
	pool, err := auditPool(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	bar := newProgress(stderr, isTerminal(stderr), "audit verify", "events")
	report, err := audit.Verify(ctx, eventstore.New(pool), audit.VerifyOptions{PageSize: *page, Workers: *workers, Progress: bar.report})
	bar.finish()
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(stdout)
	if _, err := report.WriteTo(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if !report.OK() {
		return fmt.Errorf("%w: %d mismatches", errMismatch, len(report.Mismatches))
	}
	return nil
}

// auditPool connects to the ledger's database for an audit: a few connections, and no
// transaction left idle (one would stall every reader of the log).
func auditPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "60000"
	cfg.ConnConfig.RuntimeParams["application_name"] = "ledger audit"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return pool, nil
}
