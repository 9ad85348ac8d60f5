package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipelinedBeginner is a watermill-sql Beginner whose transactions pipeline their statements:
// the BEGIN travels with the poll query, and the statements the subscriber executes (the ack)
// travel with the COMMIT. The handler may also end the transaction itself, sending its batch,
// the checkpoint and the COMMIT in one round trip (CommitWith); the subscriber's ack and commit
// then have nothing left to do. A poll that applies a batch costs two round trips (poll; batch,
// checkpoint and commit) instead of five, and an empty poll two instead of three. Each round
// trip costs socket writes and wake-ups on both sides, which dominate a projector under load;
// and a transaction that wrote holds the log's fence back for every projector until it ends,
// so it should end in the round trip that wrote.
type pipelinedBeginner struct {
	pool *pgxpool.Pool
	// prelude runs first in every transaction (the poll lock).
	prelude []queuedStmt
	// refused holds the error of the last statement that the server refused at a commit: the
	// subscriber saw its ExecContext succeed, so the backoff manager learns of it from here.
	refused atomic.Pointer[error]
}

var _ wsql.Beginner = (*pipelinedBeginner)(nil)

// newPipelinedBeginner returns a Beginner whose transactions send prelude right after their
// BEGIN, in the same round trip as the first query.
func newPipelinedBeginner(pool *pgxpool.Pool, prelude ...queuedStmt) *pipelinedBeginner {
	return &pipelinedBeginner{pool: pool, prelude: prelude}
}

// BeginTx takes a connection from the pool and sends nothing yet: the BEGIN goes with the
// transaction's first statement.
func (b *pipelinedBeginner) BeginTx(ctx context.Context, opts *sql.TxOptions) (wsql.Tx, error) {
	txOpts, err := pgxTxOptions(opts)
	if err != nil {
		return nil, err
	}
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("projections: acquire poll connection: %w", err)
	}
	return &pipelinedTx{b: b, ctx: ctx, conn: conn, opts: txOpts}, nil
}

// ExecContext runs a statement outside any transaction.
func (b *pipelinedBeginner) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	tag, err := b.pool.Exec(ctx, query, args...)
	return wsql.PgxResult{CommandTag: tag}, err
}

// QueryContext runs a query outside any transaction.
func (b *pipelinedBeginner) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	rows, err := b.pool.Query(ctx, query, args...)
	return wsql.PgxRows{Rows: rows}, err
}

// reportRefusals wraps the subscriber's backoff manager so that a poll whose ack the server
// refused at commit counts as a failed poll, as it did when the ack ran on its own: logged and
// retried after the retry interval, not taken for a batch applied.
func (b *pipelinedBeginner) reportRefusals(next wsql.BackoffManager) wsql.BackoffManager {
	return refusalReporter{next: next, b: b}
}

type refusalReporter struct {
	next wsql.BackoffManager
	b    *pipelinedBeginner
}

// HandleError runs right after the poll's transaction ended, on the subscriber's goroutine.
func (r refusalReporter) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	if refused := r.b.refused.Swap(nil); refused != nil {
		err = errors.Join(err, *refused)
	}
	return r.next.HandleError(logger, noMsg, err)
}

// pgxTxOptions maps opts as watermill's pgx adapter does (the default level included, which it
// makes SERIALIZABLE).
func pgxTxOptions(opts *sql.TxOptions) (pgx.TxOptions, error) {
	if opts == nil {
		return pgx.TxOptions{}, nil
	}
	var level pgx.TxIsoLevel
	switch opts.Isolation {
	case sql.LevelReadUncommitted:
		level = pgx.ReadUncommitted
	case sql.LevelReadCommitted:
		level = pgx.ReadCommitted
	case sql.LevelRepeatableRead:
		level = pgx.RepeatableRead
	case sql.LevelSnapshot:
		return pgx.TxOptions{}, errors.New("projections: PostgreSQL has no snapshot isolation level")
	default:
		level = pgx.Serializable
	}
	mode := pgx.ReadWrite
	if opts.ReadOnly {
		mode = pgx.ReadOnly
	}
	return pgx.TxOptions{IsoLevel: level, AccessMode: mode}, nil
}

// rollbackTimeout bounds the ROLLBACK that ends a transaction which did not commit; a
// connection that does not answer in time is closed instead.
const rollbackTimeout = 5 * time.Second

// pipelinedTx is one transaction of a pipelinedBeginner. Its methods, the rows of its query and
// the statements of the handler (see pgxTx) run one at a time: the subscriber may end the
// transaction while the handler of a message it stopped waiting for is still running.
type pipelinedTx struct {
	b *pipelinedBeginner
	// ctx is the context the transaction began with. watermill's Commit and Rollback take none,
	// so, as in watermill's pgx adapter, it bounds the commit (a stopping subscriber cancels
	// it) and, without its cancellation, the rollback.
	ctx context.Context

	mu   sync.Mutex
	conn *pgxpool.Conn // nil once the transaction ended and released it
	opts pgx.TxOptions // what the BEGIN says
	sent bool          // the BEGIN was sent
	// queued are the statements ExecContext deferred; they run, in order, before the next
	// statement the transaction sends, or with its COMMIT.
	queued []queuedStmt
	rows   *pipelinedRows // the query's results while they are still being read
	// over is set once the handler sent the COMMIT (CommitWith); overErr is why that commit
	// failed, if it did. The subscriber's ack and commit then send nothing.
	over    bool
	overErr error
}

var _ wsql.Tx = (*pipelinedTx)(nil)

type queuedStmt struct {
	sql  string
	args []any
}

// ExecContext queues the statement; it runs with the transaction's next statement or its
// COMMIT, and an error it meets is returned there. The statements the subscriber executes
// are the ack and the consumed-message query, whose results it uses for a log line at most.
// Once the handler has sent the COMMIT, the ack is dropped: the handler moved the checkpoint
// in its own batch, and an ack sent now would run outside that transaction, moving the
// checkpoint even where the batch did not commit.
func (t *pipelinedTx) ExecContext(_ context.Context, query string, args ...any) (wsql.Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return nil, sql.ErrTxDone
	}
	if !t.over {
		t.queued = append(t.queued, queuedStmt{sql: query, args: args})
	}
	return deferredResult{}, nil
}

// deferredResult is the result of a queued statement, which has not run yet.
type deferredResult struct{}

func (deferredResult) RowsAffected() (int64, error) {
	return 0, errors.New("projections: the statement runs at commit; its row count is not known yet")
}

// QueryContext sends the BEGIN (with any queued statements) and the query in one batch. It
// waits for the query's first row, so that an error of the query is returned here.
func (t *pipelinedTx) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return nil, sql.ErrTxDone
	}
	t.closeRows()
	b := &pgx.Batch{}
	b.Queue(query, args...)
	br, err := t.send(ctx, b)
	if err != nil {
		return nil, err
	}
	rows, _ := br.Query() // an error is the rows' error as well
	r := &pipelinedRows{t: t, br: br, rows: rows}
	if rows.Next() {
		r.ahead = true
		t.rows = r
		return r, nil
	}
	r.finish()
	if r.err != nil {
		return nil, r.err
	}
	return r, nil
}

// Commit sends the queued statements and the COMMIT in one batch. A transaction that never
// sent anything commits nothing and only gives its connection back, as does one whose handler
// already sent the COMMIT; if that commit failed, the failure goes to the backoff manager, so
// that the poll counts as failed.
func (t *pipelinedTx) Commit() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return sql.ErrTxDone
	}
	t.closeRows()
	if t.over {
		err := t.overErr
		if err != nil {
			t.b.refused.Store(&err)
			err = fmt.Errorf("%w: %w", pgx.ErrTxCommitRollback, err)
		}
		return errors.Join(err, t.end())
	}
	if !t.sent && len(t.queued) == 0 {
		return t.end()
	}
	b := &pgx.Batch{}
	b.Queue("commit")
	br, err := t.send(t.ctx, b)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			// The server refused a queued statement and skipped the rest of the batch, so
			// the COMMIT never ran: end's ROLLBACK ends the transaction with nothing of it
			// kept. That is pgx's commit that turned into a rollback, which the subscriber
			// expects and takes silently; the refusal itself goes to the backoff manager.
			t.b.refused.Store(&err)
			err = fmt.Errorf("%w: %w", pgx.ErrTxCommitRollback, err)
		}
		return errors.Join(err, t.end())
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && tag.String() == "ROLLBACK" {
		// The transaction had failed before: PostgreSQL answers its COMMIT with a rollback.
		err = pgx.ErrTxCommitRollback
	}
	if err != nil {
		err = fmt.Errorf("projections: commit poll transaction: %w", err)
	}
	return errors.Join(err, t.end())
}

// Rollback discards the queued statements and rolls back what the transaction sent.
func (t *pipelinedTx) Rollback() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return sql.ErrTxDone
	}
	t.closeRows()
	return t.end()
}

// owes reports whether the server has yet to receive the BEGIN or queued statements.
func (t *pipelinedTx) owes() bool { return !t.sent || len(t.queued) > 0 }

// send sends what the transaction owes the server (the BEGIN, the queued statements) and b's
// statements in one batch: one round trip. It reads the results of what was owed and returns
// the batch results positioned at b's first statement; if an owed statement failed, it closes
// them and returns its error.
func (t *pipelinedTx) send(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	if !t.owes() {
		return t.conn.SendBatch(ctx, b), nil
	}
	all := &pgx.Batch{}
	begins := !t.sent
	if begins {
		all.BeginTx(t.opts)
		for _, q := range t.b.prelude {
			all.Queue(q.sql, q.args...)
		}
	}
	for _, q := range t.queued {
		all.Queue(q.sql, q.args...)
	}
	owed := all.Len()
	all.QueuedQueries = append(all.QueuedQueries, b.QueuedQueries...)
	t.sent, t.queued = true, nil
	br := t.conn.SendBatch(ctx, all)
	for i := range owed {
		if _, err := br.Exec(); err != nil {
			_ = br.Close() // reports the same error
			what := "queued statement"
			if begins && i == 0 {
				what = "begin"
			}
			return nil, fmt.Errorf("projections: poll transaction: %s: %w", what, err)
		}
	}
	return br, nil
}

// errPollTxOver marks an error after which the poll transaction is over: the handler rolled it
// back (abort), or sent its COMMIT and whether it committed is not known from here (commitWith).
// Nothing more can run in it.
var errPollTxOver = errors.New("the poll transaction is over")

// commitWith sends b and a COMMIT in one batch, after what the transaction owes the server:
// one round trip. If a statement of b fails, the server skips the rest of the batch, the
// COMMIT included, and the transaction stays open in its failed state, to be rolled back to a
// savepoint; the error is b's. Otherwise the transaction is over: committed if commitWith
// returns nil, committed or not if it returns an error, which then wraps errPollTxOver.
func (t *pipelinedTx) commitWith(ctx context.Context, b *pgx.Batch) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil || t.over {
		return pgx.ErrTxClosed
	}
	t.closeRows()
	b.Queue("commit").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() == "ROLLBACK" {
			// The transaction had failed before: PostgreSQL answers its COMMIT with a rollback.
			return pgx.ErrTxCommitRollback
		}
		return nil
	})
	br, err := t.send(ctx, b)
	if err == nil {
		err = br.Close()
	}
	pg := t.conn.Conn().PgConn()
	if err != nil && !pg.IsClosed() && !pg.IsBusy() && pg.TxStatus() == 'E' {
		return err
	}
	t.over = true
	if err != nil {
		t.overErr = fmt.Errorf("%w: %w", errPollTxOver, err)
		return t.overErr
	}
	return nil
}

// abort rolls the transaction back at once and ends it. The subscriber's ack is dropped, and
// its commit reports cause, as it reports a failed commit, so that the poll counts as failed.
// The error returned wraps errPollTxOver and cause.
func (t *pipelinedTx) abort(ctx context.Context, cause error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil || t.over {
		return errors.Join(cause, pgx.ErrTxClosed)
	}
	t.closeRows()
	t.over = true
	t.overErr = fmt.Errorf("%w: rolled back: %w", errPollTxOver, cause)
	if t.sent {
		if _, err := t.conn.Exec(ctx, "rollback"); err != nil {
			// end closes a connection whose transaction is still open.
			t.overErr = errors.Join(t.overErr, fmt.Errorf("projections: roll back poll transaction: %w", err))
		}
	}
	return t.overErr
}

// closeRows reads what is left of the query's results, so the connection is free.
func (t *pipelinedTx) closeRows() {
	if t.rows != nil {
		t.rows.finish()
	}
}

// end rolls back whatever is still open on the connection and gives it back to the pool,
// closed if its state is unknown, so that the next poll never inherits a transaction.
func (t *pipelinedTx) end() error {
	conn := t.conn
	t.conn, t.queued = nil, nil
	pg := conn.Conn().PgConn()
	var err error
	if !pg.IsClosed() && !pg.IsBusy() && pg.TxStatus() != 'I' {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), rollbackTimeout)
		_, err = conn.Exec(ctx, "rollback")
		cancel()
		if err != nil {
			err = fmt.Errorf("projections: roll back poll transaction: %w", err)
		}
	}
	if !pg.IsClosed() && (err != nil || pg.IsBusy() || pg.TxStatus() != 'I') {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), rollbackTimeout)
		_ = conn.Conn().Close(ctx) // the error that brought us here is the one to report
		cancel()
	}
	conn.Release()
	return err
}

// pgxTx returns the transaction as the handler uses it.
func (t *pipelinedTx) pgxTx() pollBatchTx { return handlerTx{t} }

// exec runs a statement of the handler, after what the transaction owes the server.
func (t *pipelinedTx) exec(ctx context.Context, query string, args ...any) (pgconn.CommandTag, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil || t.over {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	t.closeRows()
	if !t.owes() {
		return t.conn.Exec(ctx, query, args...)
	}
	b := &pgx.Batch{}
	b.Queue(query, args...)
	br, err := t.send(ctx, b)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// sendBatch sends a batch of the handler, after what the transaction owes the server. The
// transaction is the batch's until its results are closed.
func (t *pipelinedTx) sendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	t.mu.Lock()
	if t.conn == nil || t.over {
		t.mu.Unlock()
		return pgx.FailedBatchResults(b, pgx.ErrTxClosed)
	}
	t.closeRows()
	br, err := t.send(ctx, b)
	if err != nil {
		t.mu.Unlock()
		return pgx.FailedBatchResults(b, err)
	}
	return &heldBatch{BatchResults: br, unlock: t.mu.Unlock}
}

// heldBatch holds its transaction until it is closed.
type heldBatch struct {
	pgx.BatchResults
	unlock func()
	once   sync.Once
}

func (h *heldBatch) Close() error {
	err := h.BatchResults.Close()
	h.once.Do(h.unlock)
	return err
}

// pipelinedRows are the results of the transaction's query.
type pipelinedRows struct {
	t     *pipelinedTx
	br    pgx.BatchResults
	rows  pgx.Rows
	ahead bool // the current row was read ahead and Next has not returned it yet
	done  bool
	err   error
}

var _ wsql.Rows = (*pipelinedRows)(nil)

func (r *pipelinedRows) Next() bool {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	if r.done {
		return false
	}
	if r.ahead {
		r.ahead = false
		return true
	}
	if r.rows.Next() {
		return true
	}
	r.finish()
	return false
}

func (r *pipelinedRows) Scan(dest ...any) error {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	if r.done {
		return errors.New("projections: scan of closed rows")
	}
	return r.rows.Scan(dest...)
}

// Close returns the query's error, if it failed after its first row.
func (r *pipelinedRows) Close() error {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.finish()
	return r.err
}

// finish reads the rest of the batch; the connection is free afterwards.
func (r *pipelinedRows) finish() {
	if r.done {
		return
	}
	r.done = true
	r.rows.Close()
	r.err = r.br.Close()
	if r.err == nil {
		r.err = r.rows.Err()
	}
	if r.err != nil {
		r.err = fmt.Errorf("projections: poll query: %w", r.err)
	}
	if r.t.rows == r {
		r.t.rows = nil
	}
}

// batchTx is what the handler runs its statements on: the poll transaction, inside which it
// sends statements and batches; the subscriber owns the transaction's end.
type batchTx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// pollBatchTx is the poll transaction as a projector's handler uses it: it may also end the
// transaction with its last batch (see pipelinedTx.commitWith).
type pollBatchTx interface {
	batchTx
	CommitWith(ctx context.Context, b *pgx.Batch) error
	// Abort rolls the transaction back and ends it; see pipelinedTx.abort.
	Abort(ctx context.Context, cause error) error
}

// handlerTx is the poll transaction as the handler sees it.
type handlerTx struct{ t *pipelinedTx }

var _ pollBatchTx = handlerTx{}

func (h handlerTx) CommitWith(ctx context.Context, b *pgx.Batch) error {
	return h.t.commitWith(ctx, b)
}

func (h handlerTx) Abort(ctx context.Context, cause error) error { return h.t.abort(ctx, cause) }

func (h handlerTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return h.t.exec(ctx, sql, args...)
}

func (h handlerTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return h.t.sendBatch(ctx, b)
}
