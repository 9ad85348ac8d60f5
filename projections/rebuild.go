package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/notify"
)

// ErrRebuildRunning means another rebuild of the same projection holds its lock.
var ErrRebuildRunning = errors.New("projections: a rebuild of this projection is already running")

// ErrNothingToRebuild means the projection's newest version is the one serving reads.
var ErrNothingToRebuild = errors.New("projections: the newest version already serves reads")

// rebuildLockClass keeps rebuild locks apart from other advisory locks ("LEDR").
const rebuildLockClass = 1279607890

// RebuildProgress is a rebuild's state, reported as it goes.
type RebuildProgress struct {
	Phase       string // "building", "catching up", "switching", "retiring", "done"
	Done, Total int64  // events folded, and the log's size when the rebuild began
	Rate        float64
	Elapsed     time.Duration
}

// RebuildOptions tune a rebuild; zero values take the defaults.
type RebuildOptions struct {
	Log *slog.Logger
	// Progress, when set, is called after every page of the build and on each phase change.
	Progress func(RebuildProgress)
	// PageSize is how many events one read of the log returns (default 10,000).
	PageSize int
	// CatchUpBehind is how close to the log's end the new version must be before reads
	// switch to it (default 100 events).
	CatchUpBehind int64
	// Grace is how long the rebuild keeps projecting the new version after the switch, while
	// the serving processes notice it and start their own projector (default 3s).
	Grace time.Duration
}

// RebuildReport is what a finished rebuild did.
type RebuildReport struct {
	Name             string
	From, To         int // versions
	Events, Accounts int64
	Rows             int64
	Build, Total     time.Duration
	EventsPerSecond  float64
	Checkpoint       string
}

// Rebuild builds the newest version of the named projection beside the one serving reads:
// it folds the whole log in memory, reading it in large pages through short transactions,
// writes the read model with COPY in one transaction together with its checkpoint, lets a
// projector catch up with what was appended meanwhile, switches reads to it atomically
// (projection_versions), and retires the old version. The old version serves until the
// switch; a crash before it leaves the old version serving and the rebuild restartable.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, name string, opt RebuildOptions) (RebuildReport, error) {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	progress := opt.Progress
	if progress == nil {
		progress = func(RebuildProgress) {}
	}
	orDefault(&opt.PageSize, 10_000)
	orDefault(&opt.CatchUpBehind, 100)
	orDefault(&opt.Grace, 3*time.Second)
	began := time.Now()
	target, ok := Latest(name)
	if !ok {
		return RebuildReport{}, fmt.Errorf("projections: no projection is named %q", name)
	}

	// A session lock on a connection of its own: it goes with the process if it dies.
	lockConn, err := pool.Acquire(ctx)
	if err != nil {
		return RebuildReport{}, fmt.Errorf("projections: rebuild lock: %w", err)
	}
	defer lockConn.Release()
	var locked bool
	if err := lockConn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, rebuildLockClass, name).Scan(&locked); err != nil {
		return RebuildReport{}, fmt.Errorf("projections: rebuild lock: %w", err)
	}
	if !locked {
		return RebuildReport{}, fmt.Errorf("%w (%s)", ErrRebuildRunning, name)
	}
	defer func() {
		_, _ = lockConn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, hashtext($2))`, rebuildLockClass, name)
	}()

	versions, err := ActiveVersions(ctx, pool)
	if err != nil {
		return RebuildReport{}, err
	}
	active := versions.Of(name)
	if active == target.Version {
		return RebuildReport{}, fmt.Errorf("%w: %s v%d", ErrNothingToRebuild, name, active)
	}
	rep := RebuildReport{Name: name, From: active, To: target.Version}
	log := opt.Log.With("projection", name, "from_version", active, "to_version", target.Version)
	if err := recordState(ctx, pool, target.Group(), "rebuilding", nil); err != nil {
		return rep, err
	}

	// Build: fold the log up to the fence, in memory.
	total, err := eventstore.CountLog(ctx, pool, eventstore.Checkpoint{}, eventstore.EndOfLog)
	if err != nil {
		return rep, err
	}
	log.Info("rebuild started", "events", total)
	b := target.build()
	heads := make(headsBuilder)
	var last eventstore.Checkpoint
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	buildBegan := time.Now()
	// Decoding the payloads is most of the work: pages are decoded in parallel and folded in
	// log order.
	futures := make(chan chan decodedPage, runtime.GOMAXPROCS(0)+1)
	readErr := make(chan error, 1)
	go func() {
		defer close(futures)
		_, err := eventstore.WalkLog(readCtx, pool, eventstore.LogRange{Until: eventstore.EndOfLog}, opt.PageSize, func(page []eventstore.RecordedEvent) error {
			f := make(chan decodedPage, 1)
			select {
			case futures <- f:
			case <-readCtx.Done():
				return readCtx.Err()
			}
			go func() { f <- decodePage(page) }()
			return nil
		})
		readErr <- err
	}()
	for f := range futures {
		page := <-f
		if page.err != nil {
			return rep, page.err
		}
		for _, e := range page.events {
			if err := heads.add(e); err != nil {
				return rep, err
			}
			b.add(e)
		}
		last = page.events[len(page.events)-1].Checkpoint()
		rep.Events += int64(len(page.events))
		elapsed := time.Since(buildBegan)
		progress(RebuildProgress{Phase: "building", Done: rep.Events, Total: max(total, rep.Events),
			Rate: float64(rep.Events) / elapsed.Seconds(), Elapsed: elapsed})
	}
	if err := <-readErr; err != nil {
		return rep, err
	}

	// Write the read model, its heads and its checkpoint in one transaction.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := clearVersion(ctx, tx, target); err != nil {
			return err
		}
		rows, err := b.copyOut(ctx, tx)
		if err != nil {
			return fmt.Errorf("copy %s: %w", target.table, err)
		}
		rep.Rows = rows
		if rep.Accounts, err = heads.copyOut(ctx, tx, target.Group()); err != nil {
			return fmt.Errorf("copy heads: %w", err)
		}
		return SaveCheckpoint(ctx, tx, target.Group(), last)
	})
	if err != nil {
		return rep, fmt.Errorf("projections: write %s: %w", target.Group(), err)
	}
	rep.Build = time.Since(buildBegan)
	rep.EventsPerSecond = float64(rep.Events) / rep.Build.Seconds()
	rep.Checkpoint = last.String()
	log.Info("rebuild built the read model", "events", rep.Events, "accounts", rep.Accounts, "rows", rep.Rows,
		"took", rep.Build.Round(time.Millisecond), "events_per_second", int64(rep.EventsPerSecond))

	// Catch up with what was appended meanwhile, with an ordinary projector.
	progress(RebuildProgress{Phase: "catching up", Done: rep.Events, Total: rep.Events, Elapsed: time.Since(began)})
	wake := notify.NewSignal()
	notifier := notify.NewNotifier(pool, wake, opt.Log)
	runCtx, stopRunner := context.WithCancel(context.WithoutCancel(ctx))
	runner := NewRunner(pool, wake, opt.Log, Config{PollInterval: 100 * time.Millisecond}, target)
	done := make(chan struct{}, 2)
	go func() { notifier.Run(runCtx); done <- struct{}{} }()
	go func() { _ = runner.Run(runCtx); done <- struct{}{} }()
	stop := func() {
		stopRunner()
		<-done
		<-done
	}
	for {
		behind, err := eventsBehind(ctx, pool, target.Group())
		if err != nil {
			stop()
			return rep, err
		}
		if behind <= opt.CatchUpBehind {
			break
		}
		select {
		case <-ctx.Done():
			stop()
			return rep, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}

	// Switch reads atomically; every process follows projection_versions.
	progress(RebuildProgress{Phase: "switching", Done: rep.Events, Total: rep.Events, Elapsed: time.Since(began)})
	old, _ := Lookup(name, active)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE projection_versions SET active_version = $2, switched_at = now() WHERE name = $1`,
			name, target.Version); err != nil {
			return err
		}
		if err := recordState(ctx, tx, target.Group(), "live", nil); err != nil {
			return err
		}
		return recordState(ctx, tx, old.Group(), "retired", nil)
	})
	if err != nil {
		stop()
		return rep, fmt.Errorf("projections: switch %s to v%d: %w", name, target.Version, err)
	}
	log.Info("reads switched", "version", target.Version)

	// Keep projecting while the serving processes notice the switch, then retire the old
	// version: its projectors stop, its rows go.
	progress(RebuildProgress{Phase: "retiring", Done: rep.Events, Total: rep.Events, Elapsed: time.Since(began)})
	select {
	case <-ctx.Done():
	case <-time.After(opt.Grace):
	}
	stop()
	if old.table != "" {
		err = pgx.BeginFunc(context.WithoutCancel(ctx), pool, func(tx pgx.Tx) error { return clearVersion(ctx, tx, old) })
		if err != nil {
			return rep, fmt.Errorf("projections: retire %s: %w", old.Group(), err)
		}
	}
	rep.Total = time.Since(began)
	progress(RebuildProgress{Phase: "done", Done: rep.Events, Total: rep.Events, Elapsed: rep.Total,
		Rate: rep.EventsPerSecond})
	log.Info("rebuild done", "took", rep.Total.Round(time.Millisecond))
	return rep, nil
}

// clearVersion empties p's read model and forgets its heads and checkpoint.
func clearVersion(ctx context.Context, tx pgx.Tx, p Projection) error {
	if _, err := tx.Exec(ctx, `TRUNCATE `+pgx.Identifier{p.table}.Sanitize()); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `WITH heads AS (DELETE FROM projection_heads WHERE consumer_group = $1)
		DELETE FROM projection_checkpoints WHERE consumer_group = $1`, p.Group())
	return err
}

type decodedPage struct {
	events []decoded
	err    error
}

func decodePage(page []eventstore.RecordedEvent) decodedPage {
	d := decodedPage{events: make([]decoded, len(page))}
	for i := range page {
		var err error
		if d.events[i], err = decode(&page[i]); err != nil {
			d.err = fmt.Errorf("projections: %w", err)
			return d
		}
	}
	return d
}

// eventsBehind counts the events after the group's checkpoint.
func eventsBehind(ctx context.Context, pool *pgxpool.Pool, group string) (int64, error) {
	at, err := LoadCheckpoint(ctx, pool, group)
	if err != nil {
		return 0, err
	}
	return eventstore.CountLog(ctx, pool, at, eventstore.EndOfLog)
}
