// Package lease runs a piece of work in one process at a time among all the processes that
// share a database: the holder keeps a session advisory lock on a connection of its own, so the
// lock goes with the session when the process dies, and another process takes over.
package lease

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Class keeps the leases apart from the application's other advisory locks ("LEDP").
const Class = 1279607891

// ErrLost is why work stops when its lease's session is lost.
var ErrLost = errors.New("lease lost")

// Options tune Run.
type Options struct {
	// Retry is how often a process that does not hold the lease tries to take it.
	Retry time.Duration
	// Check is how often a held lease's session is checked.
	Check time.Duration
	// Standby, when set, is told whether another process holds the lease as this one waits.
	Standby func(bool)
}

// Run waits until this process holds the named lease, then runs fn with a context that ends
// when ctx does or the lease is lost, and releases the lease when fn returns. It returns fn's
// error, ErrLost when the lease was lost, or ctx's error.
func Run(ctx context.Context, pool *pgxpool.Pool, name string, opt Options, fn func(context.Context) error) error {
	conn, err := acquire(ctx, pool, name, opt)
	if err != nil {
		return err
	}
	defer release(conn, name)
	held, lost := context.WithCancelCause(ctx)
	defer lost(nil)
	watched := make(chan struct{})
	go func() { defer close(watched); watch(held, conn, lost, opt.Check) }()
	err = fn(held)
	cause := context.Cause(held)
	lost(nil)
	<-watched
	if errors.Is(cause, ErrLost) && ctx.Err() == nil {
		return ErrLost
	}
	return err
}

func acquire(ctx context.Context, pool *pgxpool.Pool, name string, opt Options) (*pgxpool.Conn, error) {
	for {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		var held bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, Class, name).Scan(&held); err != nil {
			conn.Release()
			return nil, err
		}
		if opt.Standby != nil {
			opt.Standby(!held)
		}
		if held {
			return conn, nil
		}
		conn.Release()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(opt.Retry):
		}
	}
}

// watch checks the session every interval and reports the lease lost when the session is.
func watch(ctx context.Context, conn *pgxpool.Conn, lost context.CancelCauseFunc, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, 2*interval)
		_, err := conn.Exec(pctx, "SELECT 1")
		cancel()
		if err != nil && ctx.Err() == nil {
			lost(ErrLost)
			return
		}
	}
}

func release(conn *pgxpool.Conn, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, Class, name); err != nil {
		// A session that cannot unlock is broken; closing it releases the lock.
		_ = conn.Conn().Close(ctx)
	}
	conn.Release()
}
