package notify

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Channel is the PostgreSQL channel that tells other processes the log moved.
const Channel = "ledger_events"

// ledgerAppPrefix starts the application_name of every ledger process's sessions
// ("ledger serve <pid> <tag>", "ledger audit"); a Notifier sends only while a session so named,
// and not its own, is connected.
const ledgerAppPrefix = "ledger "

// audienceCheckInterval is how often a Notifier looks for other ledger processes. A NOTIFY is
// a transaction that takes an xid and writes a commit record, hundreds a second under load, so
// a process alone on its database sends none; the look is one read of pg_stat_activity (shared
// memory, no xid, no WAL), so once a second costs nothing. A process that connects goes up to
// one interval (plus the look's own latency) without our wake-ups; it then does what it does
// whenever a NOTIFY is lost: its projectors poll (every second by default, the same bound) and
// its reads fold the account's own events. Nothing is missed, only delayed.
const audienceCheckInterval = time.Second

// Notifier carries wake-ups between processes sharing one database: Publish sends a NOTIFY
// (outside any append transaction, coalescing bursts into one) while another ledger process is
// connected to hear it, Listen turns NOTIFYs from other processes into local wake-ups.
type Notifier struct {
	pool    *pgxpool.Pool
	wake    *Signal
	log     *slog.Logger
	pending chan struct{}
	// self tags this process's NOTIFYs so that it does not wake itself twice.
	self string
	// name is the application_name of this process's sessions, which are not an audience.
	name string
	// audience is whether the last look found another ledger process connected, or failed:
	// when in doubt, send.
	audience atomic.Bool
}

// NewNotifier returns a Notifier that wakes local waiters through wake. The process's own
// sessions are recognised by the application_name that pool gives its connections, exactly:
// every ledger process must name its pool uniquely (serve: "ledger serve <pid> <random tag>",
// since pids repeat across hosts and containers) or two processes would not see each other.
func NewNotifier(pool *pgxpool.Pool, wake *Signal, log *slog.Logger) *Notifier {
	n := &Notifier{pool: pool, wake: wake, log: log, pending: make(chan struct{}, 1), self: uuid.NewString(),
		name: pool.Config().ConnConfig.RuntimeParams["application_name"]}
	n.audience.Store(true)
	return n
}

// Publish asks for a NOTIFY to be sent; it never blocks. Many calls while one NOTIFY is on its
// way turn into one more; calls while no other ledger process is connected send nothing.
func (n *Notifier) Publish() {
	select {
	case n.pending <- struct{}{}:
	default:
	}
}

// Run sends published NOTIFYs and listens for other processes' until ctx ends. It looks for
// an audience once before the first NOTIFY, then every audienceCheckInterval.
func (n *Notifier) Run(ctx context.Context) {
	n.checkAudience(ctx)
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		n.listen(ctx)
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		n.watchAudience(ctx)
	}()
	for {
		select {
		case <-ctx.Done():
			<-done
			<-done
			return
		case <-n.pending:
			if !n.audience.Load() {
				continue
			}
			if _, err := n.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, Channel, n.self); err != nil && ctx.Err() == nil {
				n.log.Warn("notify failed; other processes fall back to polling", "err", err)
			}
		}
	}
}

func (n *Notifier) watchAudience(ctx context.Context) {
	t := time.NewTicker(audienceCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.checkAudience(ctx)
		}
	}
}

// checkAudience records whether another ledger process is connected to this database. A look
// that fails (or outlasts the interval, e.g. behind a saturated pool) counts as yes.
func (n *Notifier) checkAudience(ctx context.Context) {
	lookCtx, cancel := context.WithTimeout(ctx, audienceCheckInterval)
	defer cancel()
	var others bool
	err := n.pool.QueryRow(lookCtx, `
		SELECT EXISTS (SELECT FROM pg_stat_activity
		WHERE datname = current_database() AND starts_with(application_name, $1) AND application_name <> $2)`,
		ledgerAppPrefix, n.name).Scan(&others)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		others = true
	}
	if was := n.audience.Swap(others); was != others && err == nil {
		if others {
			n.log.Info("another ledger process is connected; sending it wake-ups")
		} else {
			n.log.Info("no other ledger process is connected; wake-ups are not sent")
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
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
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
