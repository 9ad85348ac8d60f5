package app

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/eventstore"
)

// ReadRouter chooses the database each read runs on: the primary or one of its hot standbys
// (package standby). Commands never ask it: they run on the primary.
type ReadRouter interface {
	// Standbys returns the standbys' pools; a read routed to i > 0 runs on Standbys()[i-1].
	Standbys() []*pgxpool.Pool
	// Route returns where a read asked for now is to run: 0 for the primary, or a standby
	// that shows every command that returned before Route was called. Its only error is
	// ctx's.
	Route(ctx context.Context) (int, error)
	// Failed reports a read that failed on a standby (it then ran on the primary).
	Failed(target int, err error)
}

// reader is one database reads may run on: its pool and the event store's reads over it.
type reader struct {
	pool  *pgxpool.Pool
	store EventStore
}

// newReaders returns the primary's reader first, then one per standby of router.
func newReaders(store *eventstore.Store, router ReadRouter) []reader {
	out := []reader{{pool: store.Pool(), store: store}}
	if router != nil {
		for _, p := range router.Standbys() {
			out = append(out, reader{pool: p, store: eventstore.New(p)})
		}
	}
	return out
}

// route returns where a read asked for now runs (see ReadRouter.Route): always the primary
// without standbys.
func (a *App) route(ctx context.Context) (int, error) {
	if a.router == nil {
		return 0, nil
	}
	return a.router.Route(ctx)
}

// onReader runs read on target, and once more on the primary when target is a standby on
// which it failed: a standby that fails mid-read (stopped, restarted, a query cancelled by a
// conflict with recovery) never turns a read into an error while the primary answers.
func (a *App) onReader(ctx context.Context, target int, read func(context.Context, reader) error) error {
	err := read(ctx, a.readers[target])
	if err == nil || target == 0 || ctx.Err() != nil {
		return err
	}
	a.router.Failed(target, err)
	return read(ctx, a.readers[0])
}

// read runs read where the router sends a read asked for now (see onReader).
func (a *App) read(ctx context.Context, read func(context.Context, reader) error) error {
	target, err := a.route(ctx)
	if err != nil {
		return err
	}
	return a.onReader(ctx, target, read)
}
