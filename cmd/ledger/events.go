package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/relay"
)

// runEvents runs the subcommands about the events on NATS.
func runEvents(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintln(stderr, "usage: ledger events <republish|tail> [flags]")
		fmt.Fprintln(stderr, "\n  republish  publish the log's events again to JetStream, from a checkpoint or the start (the relay's place stays)")
		fmt.Fprintln(stderr, "  tail       print the events on JetStream as newline-delimited JSON, live")
		fmt.Fprintln(stderr, "\nRun 'ledger events <command> -h' for its flags.")
	}
	return subcommand("events", args, stderr, usage, map[string]func([]string) error{
		"republish": func(a []string) error { return runEventsRepublish(ctx, a, stdout, stderr) },
		"tail":      func(a []string) error { return runEventsTail(ctx, a, stdout, stderr) },
	})
}

func runEventsRepublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("events republish", stderr)
	var cfg serveConfig
	bindDatabaseURL(fs, &cfg.DatabaseURL)
	cfg.bindNATS(fs)
	var from checkpointFlag
	fs.Var(&from, "from", "publish the events after this checkpoint, transaction:position (as the records carry)")
	fromStart := fs.Bool("from-start", false, "publish every event of the log")
	page := fs.Int("page-size", 1000, "events per read of the log")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fromSet := false
	fs.Visit(func(f *flag.Flag) { fromSet = fromSet || f.Name == "from" })
	if cfg.DatabaseURL == "" || cfg.NATSURL == "" || fromSet == *fromStart || *page <= 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: ledger events republish --from CHECKPOINT | --from-start [--page-size N]\n"+
			"needs a database (APP_POSTGRES_URL or --database-url) and a NATS server (APP_NATS_URL or --nats-url)")
		return errUsage
	}
	if err := cfg.validateNATS(); err != nil {
		fmt.Fprintf(stderr, "ledger events republish: %v\n", err)
		return errUsage
	}
	pool, err := auditPool(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	rcfg := cfg.relayConfig()
	rcfg.PageSize = *page
	began := time.Now()
	bar := newProgress(stderr, isTerminal(stderr), "events republish", "events")
	n, last, err := relay.Republish(ctx, eventstore.New(pool), rcfg, from.c, bar.report)
	bar.finish()
	if err != nil {
		return fmt.Errorf("republish stopped after %d events (resume with --from %s): %w", n, last, err)
	}
	fmt.Fprintf(stdout, "republished %d events to %s in %s; the last checkpoint is %s\n", n, rcfg.Stream,
		time.Since(began).Round(time.Millisecond), last)
	return nil
}

// stringsFlag is a flag that may be given several times.
type stringsFlag []string

func (f *stringsFlag) String() string     { return fmt.Sprint(*f) }
func (f *stringsFlag) Set(s string) error { *f = append(*f, s); return nil }

func runEventsTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("events tail", stderr)
	var cfg serveConfig
	bindDatabaseURL(fs, &cfg.DatabaseURL)
	cfg.bindNATS(fs)
	var from checkpointFlag
	fs.Var(&from, "from", "print the events after this checkpoint, transaction:position (default: only new events)")
	fromStart := fs.Bool("from-start", false, "print every event the stream holds, then new ones")
	var types stringsFlag
	fs.Var(&types, "type", "print only events of this type, e.g. CoinsSent (may be repeated)")
	account := fs.String("account", "", "print only the events of this employee's account (needs the database)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fromSet := false
	fs.Visit(func(f *flag.Flag) { fromSet = fromSet || f.Name == "from" })
	if cfg.NATSURL == "" || (fromSet && *fromStart) || fs.NArg() > 0 || (*account != "" && cfg.DatabaseURL == "") {
		fmt.Fprintln(stderr, "usage: ledger events tail [--from-start | --from CHECKPOINT] [--type T]... [--account NAME]\n"+
			"needs a NATS server (APP_NATS_URL or --nats-url); --account needs the database (APP_POSTGRES_URL or --database-url)")
		return errUsage
	}
	for _, t := range types {
		if _, err := relay.Subject(t); err != nil {
			fmt.Fprintf(stderr, "ledger events tail: --type: %v\n", err)
			return errUsage
		}
	}
	var stream string
	if *account != "" {
		ledger, done, err := usersApp(ctx, cfg.DatabaseURL)
		if err != nil {
			return err
		}
		id, err := ledger.LookupIdentity(ctx, *account)
		done()
		if err != nil {
			return userError(*account, err)
		}
		stream = domain.StreamID(id.AccountID)
	}
	nc, err := nats.Connect(cfg.NATSURL, nats.Name("ledger events tail"), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	out := bufio.NewWriter(stdout)
	last := map[string]int64{} // stream id → the last version printed
	err = relay.Read(ctx, nc, relay.ReadOptions{Stream: cfg.NATSStream, Types: types, New: !fromSet && !*fromStart},
		func(m relay.Message) error {
			id := m.Header.Get(relay.HeaderStreamID)
			if stream != "" && id != stream {
				return nil
			}
			if fromSet {
				at, err := eventstore.ParseCheckpoint(m.Header.Get(relay.HeaderCheckpoint))
				if err != nil || !from.c.Before(at) {
					return nil
				}
			}
			// The consumer contract: dedup by (stream id, version), each stream in order.
			var v struct{ Version int64 }
			if err := json.Unmarshal(m.Data, &v); err != nil {
				return fmt.Errorf("message %d is not an event record: %w", m.Sequence, err)
			}
			if v.Version <= last[id] {
				return nil
			}
			last[id] = v.Version
			if _, err := out.Write(m.Data); err != nil {
				return err
			}
			if err := out.WriteByte('\n'); err != nil {
				return err
			}
			return out.Flush()
		})
	if errors.Is(err, context.Canceled) {
		return nil // interrupted: the normal end of a tail
	}
	return err
}
