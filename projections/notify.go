package projections

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// NotifyChannel is the PostgreSQL channel that tells other processes the log moved.
const NotifyChannel = "ledger_events"

// Notifier carries wake-ups between processes sharing one database: Publish sends a NOTIFY
// (outside any append transaction, coalescing bursts into one), Listen turns NOTIFYs from other
// processes into local wake-ups.
type Notifier struct {
	pool    *pgxpool.Pool
	wake    *Signal
	log     *slog.Logger
	pending chan struct{}
	// self tags this process's NOTIFYs so that it does not wake itself twice.
	self string
}

// NewNotifier returns a Notifier that wakes local waiters through wake.
func NewNotifier(pool *pgxpool.Pool, wake *Signal, log *slog.Logger) *Notifier {
	return &Notifier{pool: pool, wake: wake, log: log, pending: make(chan struct{}, 1), self: uuid.NewString()}
}

// Publish asks for a NOTIFY to be sent; it never blocks. Many calls while one NOTIFY is on its
// way turn into one more.
func (n *Notifier) Publish() {
	select {
	case n.pending <- struct{}{}:
	default:
	}
}

// Run sends published NOTIFYs and listens for other processes' until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.listen(ctx)
	}()
	for {
		select {
		case <-ctx.Done():
			<-done
			return
		case <-n.pending:
			if _, err := n.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, n.self); err != nil && ctx.Err() == nil {
				n.log.Warn("notify failed; other processes fall back to polling", "err", err)
			}
		}
	}
}

func (n *Notifier) listen(ctx context.Context) {
	for ctx.Err() == nil {
		err := n.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("listen for wake-ups failed; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (n *Notifier) listenOnce(ctx context.Context) error {
	pooled, err := n.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A listening connection must not go back to the pool with LISTEN still active: take it
	// out of the pool for good.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return err
	}
	for {
		note, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if note.Payload == n.self {
			continue
		}
		n.wake.Notify()
	}
}
