package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/pgtest"
)

// These tests look inside the package, at the poll transaction, so they cannot share the
// database of the package's other tests (that one belongs to the external test package):
// each makes its own with pgtest.

// pollRig is a test database with a pool of one connection, whose socket writes it counts: the
// client writes once per round trip (a batch is flushed as one write), so the writes of a poll
// are its round trips.
type pollRig struct {
	db     *pgtest.Database
	pool   *pgxpool.Pool
	writes atomic.Int64
	store  *eventstore.Store
}

func newPollRig(t *testing.T) *pollRig {
	t.Helper()
	ctx := context.Background()
	d, err := pgtest.Create(ctx, "polltx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Drop)
	r := &pollRig{db: d, store: eventstore.New(d.Pool)}
	cfg, err := pgxpool.ParseConfig(d.URL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	// An idle connection is pinged when acquired, a round trip the poll does not make itself.
	cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{Conn: c, writes: &r.writes}, nil
	}
	if r.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.pool.Close)
	if _, err := d.Pool.Exec(ctx, `CREATE TABLE polltx_writes (consumer_group text, position bigint, PRIMARY KEY (consumer_group, position))`); err != nil {
		t.Fatal(err)
	}
	return r
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// open appends an account's opening events and returns the position of the last.
func (r *pollRig) open(t *testing.T) int64 {
	t.Helper()
	id := uuid.New()
	evs, err := domain.OpenAccount(id, "u"+id.String()[:8])
	if err != nil {
		t.Fatal(err)
	}
	data := make([]eventstore.EventData, len(evs))
	for i, e := range evs {
		data[i] = eventstore.EventData{Type: e.EventType(), SchemaVersion: domain.SchemaVersion, Payload: e}
	}
	res, err := r.store.Append(context.Background(), []eventstore.StreamAppend{
		{StreamID: domain.StreamID(id), Expected: eventstore.NoStream(), Events: data}})
	if err != nil {
		t.Fatal(err)
	}
	// Another test's transaction on the shared server may still hold the log's fence below the
	// append; a poll moves the checkpoint past it only once it is settled.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.store.WaitSettled(ctx, res.Checkpoint.TransactionID+1); err != nil {
		t.Fatalf("the append stays behind the log's fence: %v", err)
	}
	return res.Checkpoint.Position
}

// idleConn checks that the pool's one connection is idle outside a transaction and returns
// its backend's pid: a connection released dirty is destroyed, and the next one has another.
func (r *pollRig) idleConn(t *testing.T) uint32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		t.Fatalf("the poll connection is not back in the pool: %v", err)
	}
	defer conn.Release()
	if s := conn.Conn().PgConn().TxStatus(); s != 'I' {
		t.Fatalf("the poll connection came back with transaction status %q", s)
	}
	return conn.Conn().PgConn().PID()
}

// committed returns what the group has committed: its handler's writes and its checkpoint.
func (r *pollRig) committed(t *testing.T, group string) (writes int, checkpoint int64) {
	t.Helper()
	err := r.db.Pool.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM polltx_writes WHERE consumer_group = $1),
		       (SELECT position FROM projection_checkpoints WHERE consumer_group = $1)`, group).Scan(&writes, &checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	return writes, checkpoint
}

// pollSub is a watermill-sql subscriber on the rig's pool that polls only when the test lets
// it, and reports the end of each poll (after its transaction ended).
type pollSub struct {
	msgs <-chan *message.Message
	ends chan pollEnd
	next chan struct{}
	txOf func(context.Context) (batchTx, error)
	last pollEnd
	// schema is the subscriber's schema adapter, which holds the batch of the message in flight.
	schema *eventsSchema
}

type pollEnd struct {
	noMsg      bool
	err        error
	writes     int64 // the rig's writes so far
	roundTrips int64 // since the previous poll ended
	acquired   int32 // connections out of the pool
}

type subOptions struct {
	beginner    wsql.Beginner
	txOf        func(context.Context) (batchTx, error)
	offsets     wsql.OffsetsAdapter
	ackDeadline time.Duration
}

func (r *pollRig) subscribe(t *testing.T, group string, o subOptions) *pollSub {
	t.Helper()
	if o.beginner == nil {
		o.beginner = newPipelinedBeginner(r.pool, pollLock(group))
		o.txOf = func(ctx context.Context) (batchTx, error) { return pollTx(ctx) }
	}
	if o.offsets == nil {
		o.offsets = checkpoints{}
	}
	if o.ackDeadline == 0 {
		o.ackDeadline = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	schema := &eventsSchema{batchSize: 100, wake: NewSignal()}
	s := &pollSub{ends: make(chan pollEnd), next: make(chan struct{}), txOf: o.txOf, schema: schema}
	var backoff wsql.BackoffManager = &stepper{r: r, s: s, done: ctx.Done()}
	if p, ok := o.beginner.(*pipelinedBeginner); ok {
		backoff = p.reportRefusals(backoff)
	}
	sub, err := wsql.NewSubscriber(o.beginner, wsql.SubscriberConfig{
		ConsumerGroup:  group,
		SchemaAdapter:  schema,
		OffsetsAdapter: o.offsets,
		PollInterval:   time.Second,
		ResendInterval: 10 * time.Millisecond,
		RetryInterval:  time.Second,
		AckDeadline:    &o.ackDeadline,
		BackoffManager: backoff,
	}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = sub.Close()
	})
	if s.msgs, err = sub.Subscribe(ctx, topic); err != nil {
		t.Fatal(err)
	}
	return s
}

// stepper is the subscriber's backoff manager: it reports each poll's end and holds the next
// poll until the test lets it go.
type stepper struct {
	r    *pollRig
	s    *pollSub
	done <-chan struct{}
}

func (st *stepper) HandleError(_ watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	end := pollEnd{noMsg: noMsg, err: err, writes: st.r.writes.Load(), acquired: st.r.pool.Stat().AcquiredConns()}
	select {
	case st.s.ends <- end:
	case <-st.done:
		return time.Hour // no poll that the test's end would cut short
	}
	select {
	case <-st.s.next:
		return 0
	case <-st.done:
		return time.Hour
	}
}

// poll lets the subscriber poll again.
func (s *pollSub) poll(t *testing.T) {
	t.Helper()
	select {
	case s.next <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatal("the subscriber is not waiting to poll")
	}
}

// end waits for the end of the poll in flight.
func (s *pollSub) end(t *testing.T) pollEnd {
	t.Helper()
	select {
	case e := <-s.ends:
		e.roundTrips = e.writes - s.last.writes
		s.last = e
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("the poll did not end")
		return pollEnd{}
	}
}

// message waits for the next message, polling again while polls come back empty (an event
// stays behind the xid fence while any transaction older than it runs on the server).
func (s *pollSub) message(t *testing.T) *message.Message {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case msg := <-s.msgs:
			return msg
		case e := <-s.ends:
			if !e.noMsg || e.err != nil {
				t.Fatalf("a poll ended without a message: %+v", e)
			}
			e.roundTrips = e.writes - s.last.writes
			s.last = e
			s.poll(t)
		case <-deadline:
			t.Fatal("no message")
		}
	}
}

// handle runs fn on the next message in its poll transaction and acks it.
func (s *pollSub) handle(t *testing.T, fn func(context.Context, batchTx, *message.Message) error) *message.Message {
	t.Helper()
	msg := s.message(t)
	tx, err := s.txOf(msg.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := fn(msg.Context(), tx, msg); err != nil {
		t.Fatal(err)
	}
	msg.Ack()
	return msg
}

// record is a handler that writes one row for the message, as a projector writes its batch.
func record(group string) func(context.Context, batchTx, *message.Message) error {
	return func(ctx context.Context, tx batchTx, msg *message.Message) error {
		_, err := tx.Exec(ctx, `INSERT INTO polltx_writes (consumer_group, position) VALUES ($1, $2::bigint)`,
			group, msg.Metadata.Get(mdLastPosition))
		return err
	}
}

// recordAndCommit writes as record does, then moves the checkpoint to the batch's last event
// and commits, all in one round trip, as a projector does with a batch that applies whole.
func recordAndCommit(s *pollSub, group string) func(context.Context, batchTx, *message.Message) error {
	return func(ctx context.Context, tx batchTx, msg *message.Message) error {
		return commitWith(ctx, s, group, tx, msg, record(group))
	}
}

// commitWith sends what queue queues, the checkpoint of msg's batch and the COMMIT through the
// poll transaction's CommitWith.
func commitWith(ctx context.Context, s *pollSub, group string, tx batchTx, msg *message.Message, queue func(context.Context, batchTx, *message.Message) error) error {
	ptx, ok := tx.(pollBatchTx)
	if !ok {
		return fmt.Errorf("the poll transaction %T cannot commit", tx)
	}
	pb, ok := s.schema.batch(msg.UUID)
	if !ok {
		return errors.New("the message's batch is gone")
	}
	events := pb.events
	b := &pgx.Batch{}
	if err := queue(ctx, batchQueue{b}, msg); err != nil {
		return err
	}
	last := events[len(events)-1]
	ack := checkpointQuery(group, last.checkpoint())
	b.Queue(ack.Query, ack.Args...)
	return ptx.CommitWith(ctx, b)
}

// batchQueue is a batchTx whose Exec queues its statement on a batch.
type batchQueue struct{ b *pgx.Batch }

func (q batchQueue) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.b.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}

func (q batchQueue) SendBatch(_ context.Context, b *pgx.Batch) pgx.BatchResults {
	return pgx.FailedBatchResults(b, errors.New("batchQueue sends nothing"))
}

func pgxAdapterTx(ctx context.Context) (batchTx, error) {
	wtx, _ := wsql.TxFromContext(ctx)
	ptx, ok := wtx.(*wsql.PgxTx)
	if !ok {
		return nil, errors.New("no pgx adapter transaction")
	}
	return ptx.Tx, nil
}

func TestPollRoundTrips(t *testing.T) {
	r := newPollRig(t)
	byRecord := func(_ *pollSub, group string) func(context.Context, batchTx, *message.Message) error {
		return record(group)
	}
	for _, c := range []struct {
		name              string
		opts              subOptions
		handler           func(*pollSub, string) func(context.Context, batchTx, *message.Message) error
		withEvents, empty int64
	}{
		// A projector's batch that applies whole: it commits with its checkpoint.
		{"pipelined_commit_with", subOptions{}, recordAndCommit, 2, 2},
		// A batch applied event by event: the subscriber's ack commits.
		{"pipelined", subOptions{}, byRecord, 3, 2},
		// The same polls through watermill's own pgx adapter show what the count measures.
		{"pgx_adapter", subOptions{beginner: wsql.BeginnerFromPgx(r.pool), txOf: pgxAdapterTx}, byRecord, 5, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			pid := r.idleConn(t)
			r.open(t)
			s := r.subscribe(t, c.name, c.opts)
			handler := c.handler(s, c.name)
			// The first poll with events prepares the statements: it is not counted.
			s.handle(t, handler)
			s.end(t)

			// The xid fence may hold events back for a poll or two (the server is shared):
			// every poll with events counts, until the last event is in.
			last := r.open(t)
			polls := 1
			for done := false; !done; polls++ {
				s.poll(t)
				msg := s.handle(t, handler)
				e := s.end(t)
				if e.err != nil || e.noMsg || e.roundTrips != c.withEvents || e.acquired != 0 {
					t.Errorf("poll with events: %+v, want %d round trips and the connection back", e, c.withEvents)
				}
				done = msg.Metadata.Get(mdLastPosition) == strconv.FormatInt(last, 10)
			}
			if writes, cp := r.committed(t, c.name); writes != polls || cp != last {
				t.Errorf("committed %d writes and checkpoint %d, want %d and %d", writes, cp, polls, last)
			}

			s.poll(t)
			e := s.end(t)
			if e.err != nil || !e.noMsg || e.roundTrips != c.empty || e.acquired != 0 {
				t.Errorf("empty poll: %+v, want %d round trips and the connection back", e, c.empty)
			}
			if got := r.idleConn(t); got != pid {
				t.Errorf("the poll connection was replaced (pid %d, then %d)", pid, got)
			}
		})
	}
}

func TestPollTxHoldsThePollLockWithoutATransactionID(t *testing.T) {
	r := newPollRig(t)
	r.open(t)
	s := r.subscribe(t, "isolation", subOptions{})
	var level, readOnly string
	var hasXid, locked, lockedElsewhere bool
	s.handle(t, func(ctx context.Context, tx batchTx, _ *message.Message) error {
		b := &pgx.Batch{}
		b.Queue("SHOW transaction_isolation").QueryRow(func(row pgx.Row) error { return row.Scan(&level) })
		b.Queue("SHOW transaction_read_only").QueryRow(func(row pgx.Row) error { return row.Scan(&readOnly) })
		// Polling wrote nothing, so the transaction has no id yet to hold the log's fence back.
		b.Queue("SELECT pg_current_xact_id_if_assigned() IS NOT NULL").QueryRow(func(row pgx.Row) error { return row.Scan(&hasXid) })
		b.Queue(`SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
		           AND classid = $1 AND objid = hashtext($2)::oid)`, pollLockClass, "isolation").
			QueryRow(func(row pgx.Row) error { return row.Scan(&locked) })
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		// Another session cannot take the group's poll lock while the poll holds it. (Asked
		// here, while the handler runs: once it returns, the subscriber commits.)
		var other bool
		err := r.db.Pool.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1, hashtext($2))`, pollLockClass, "isolation").Scan(&other)
		lockedElsewhere = !other
		return err
	})
	if e := s.end(t); e.err != nil {
		t.Fatal(e.err)
	}
	if level != "read committed" || readOnly != "off" || hasXid || !locked {
		t.Errorf("handler ran at %q, read only %q, with a transaction id %v, holding the poll lock %v; want read committed, off, false, true",
			level, readOnly, hasXid, locked)
	}
	if !lockedElsewhere {
		t.Error("another session took the group's poll lock while a poll held it")
	}
}

func TestPollWhoseAckIsRefusedCommitsNothing(t *testing.T) {
	r := newPollRig(t)
	ctx := context.Background()
	if _, err := r.db.Pool.Exec(ctx, `ALTER TABLE projection_checkpoints
		ADD CONSTRAINT refused_stays_put CHECK (consumer_group <> 'refused' OR position = 0)`); err != nil {
		t.Fatal(err)
	}
	pid := r.idleConn(t)
	last := r.open(t)
	s := r.subscribe(t, "refused", subOptions{})
	first := s.handle(t, record("refused"))
	e := s.end(t)
	var pgErr *pgconn.PgError
	if !errors.As(e.err, &pgErr) || pgErr.Code != "23514" {
		t.Fatalf("the backoff manager got %v, want the check violation of the ack", e.err)
	}
	if writes, cp := r.committed(t, "refused"); writes != 0 || cp != 0 {
		t.Errorf("committed %d writes and checkpoint %d without the ack", writes, cp)
	}
	if got := r.idleConn(t); got != pid {
		t.Errorf("the poll connection was replaced (pid %d, then %d)", pid, got)
	}

	if _, err := r.db.Pool.Exec(ctx, `ALTER TABLE projection_checkpoints DROP CONSTRAINT refused_stays_put`); err != nil {
		t.Fatal(err)
	}
	r.deliversAgain(t, s, "refused", first, last, record("refused"))
}

// A statement of the handler's last batch fails: the server skips the checkpoint and the
// COMMIT behind it, and the transaction stays open for the handler to roll back to its
// savepoint and carry on; the subscriber's ack then commits.
func TestHandlerCommitWhoseStatementFailsLeavesTheTransactionOpen(t *testing.T) {
	r := newPollRig(t)
	pid := r.idleConn(t)
	last := r.open(t)
	s := r.subscribe(t, "failing", subOptions{})
	var stillOpen byte
	s.handle(t, func(ctx context.Context, tx batchTx, msg *message.Message) error {
		err := commitWith(ctx, s, "failing", tx, msg, func(ctx context.Context, q batchTx, msg *message.Message) error {
			_, _ = q.Exec(ctx, "SAVEPOINT attempt")
			_, _ = q.Exec(ctx, `INSERT INTO polltx_writes (consumer_group, position) VALUES ('failing', -1)`)
			_, _ = q.Exec(ctx, "SELECT 1/0")
			return nil
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22012" || errors.Is(err, errPollTxOver) {
			return fmt.Errorf("CommitWith returned %v, want the division by zero and the transaction open", err)
		}
		if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT attempt"); err != nil {
			return err
		}
		stillOpen = tx.(handlerTx).t.conn.Conn().PgConn().TxStatus()
		return record("failing")(ctx, tx, msg)
	})
	if e := s.end(t); e.err != nil || e.acquired != 0 {
		t.Fatalf("poll ended with %+v, want no error and the connection back", e)
	}
	if stillOpen != 'T' {
		t.Errorf("after the rollback to the savepoint the transaction status was %q, want T", stillOpen)
	}
	// The write rolled back to the savepoint is gone; the one after it committed with the ack.
	if writes, cp := r.committed(t, "failing"); writes != 1 || cp != last {
		t.Errorf("committed %d writes and checkpoint %d, want 1 and %d", writes, cp, last)
	}
	if got := r.idleConn(t); got != pid {
		t.Errorf("the poll connection was replaced (pid %d, then %d)", pid, got)
	}
}

// The handler's COMMIT itself fails (here a deferred constraint, checked at commit): nothing of
// the batch is kept, the checkpoint included; the subscriber's ack, which would now run in a
// transaction of its own, is dropped; the poll counts as failed; and the next poll delivers
// the same batch again.
func TestHandlerCommitThatFailsKeepsNothingAndDropsTheAck(t *testing.T) {
	r := newPollRig(t)
	ctx := context.Background()
	if _, err := r.db.Pool.Exec(ctx, `
		CREATE FUNCTION polltx_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'P0001'; END $$;
		CREATE CONSTRAINT TRIGGER polltx_refuse AFTER INSERT ON polltx_writes
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION polltx_refuse()`); err != nil {
		t.Fatal(err)
	}
	pid := r.idleConn(t)
	last := r.open(t)
	s := r.subscribe(t, "deferred", subOptions{})
	var handlerErr error
	first := s.handle(t, func(ctx context.Context, tx batchTx, msg *message.Message) error {
		handlerErr = commitWith(ctx, s, "deferred", tx, msg, record("deferred"))
		return nil // as the projector's handler does: the ack ends the poll
	})
	e := s.end(t)
	if !errors.Is(handlerErr, errPollTxOver) {
		t.Errorf("CommitWith returned %v, want errPollTxOver", handlerErr)
	}
	var pgErr *pgconn.PgError
	if !errors.As(e.err, &pgErr) || pgErr.Message != "refused at commit" || e.acquired != 0 {
		t.Fatalf("poll ended with %+v, want the refusal at commit and the connection back", e)
	}
	if writes, cp := r.committed(t, "deferred"); writes != 0 || cp != 0 {
		t.Errorf("committed %d writes and checkpoint %d of a refused commit", writes, cp)
	}
	if got := r.idleConn(t); got != pid {
		t.Errorf("the poll connection was replaced (pid %d, then %d)", pid, got)
	}

	if _, err := r.db.Pool.Exec(ctx, `DROP TRIGGER polltx_refuse ON polltx_writes`); err != nil {
		t.Fatal(err)
	}
	r.deliversAgain(t, s, "deferred", first, last, recordAndCommit(s, "deferred"))
}

// A handler that aborts its poll: the transaction rolls back at once, the subscriber's ack is
// dropped, the poll counts as failed with the handler's cause, and the next poll delivers the
// same batch.
func TestHandlerAbortRollsBackAndDropsTheAck(t *testing.T) {
	r := newPollRig(t)
	pid := r.idleConn(t)
	last := r.open(t)
	s := r.subscribe(t, "aborted", subOptions{})
	cause := errors.New("the batch cannot be applied whole")
	var abortErr error
	first := s.handle(t, func(ctx context.Context, tx batchTx, msg *message.Message) error {
		if err := record("aborted")(ctx, tx, msg); err != nil {
			return err
		}
		abortErr = tx.(pollBatchTx).Abort(ctx, cause)
		return nil
	})
	e := s.end(t)
	if !errors.Is(abortErr, errPollTxOver) || !errors.Is(abortErr, cause) {
		t.Errorf("Abort returned %v, want errPollTxOver and the cause", abortErr)
	}
	if !errors.Is(e.err, cause) || e.acquired != 0 {
		t.Fatalf("poll ended with %+v, want the cause and the connection back", e)
	}
	if writes, cp := r.committed(t, "aborted"); writes != 0 || cp != 0 {
		t.Errorf("committed %d writes and checkpoint %d of an aborted poll", writes, cp)
	}
	if got := r.idleConn(t); got != pid {
		t.Errorf("the poll connection was replaced (pid %d, then %d)", pid, got)
	}
	r.deliversAgain(t, s, "aborted", first, last, recordAndCommit(s, "aborted"))
}

// deliversAgain checks that the next poll delivers the batch that began with first again, and
// that handling it with handler commits it: one write, and the checkpoint at last.
func (r *pollRig) deliversAgain(t *testing.T, s *pollSub, group string, first *message.Message, last int64,
	handler func(context.Context, batchTx, *message.Message) error) {
	t.Helper()
	s.poll(t)
	again := s.handle(t, handler)
	if e := s.end(t); e.err != nil {
		t.Fatal(e.err)
	}
	if got, want := again.Metadata.Get(mdFirstPosition), first.Metadata.Get(mdFirstPosition); got != want {
		t.Errorf("the batch after the failed poll starts at %s, want %s again", got, want)
	}
	if writes, cp := r.committed(t, group); writes != 1 || cp != last {
		t.Errorf("committed %d writes and checkpoint %d, want 1 and %d", writes, cp, last)
	}
}

var errNoAck = errors.New("no ack query")

// unbuildableAck fails the poll after its handler ran: the subscriber then rolls back.
type unbuildableAck struct{ checkpoints }

func (unbuildableAck) AckMessageQuery(wsql.AckMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{}, errNoAck
}

func TestFailedPollRollsBackAndReturnsTheConnectionClean(t *testing.T) {
	r := newPollRig(t)
	pid := r.idleConn(t)
	r.open(t)

	t.Run("the subscriber rolls back", func(t *testing.T) {
		s := r.subscribe(t, "rolled_back", subOptions{offsets: unbuildableAck{}})
		s.handle(t, record("rolled_back"))
		e := s.end(t)
		if !errors.Is(e.err, errNoAck) || e.acquired != 0 {
			t.Errorf("poll ended with %+v, want errNoAck and the connection back", e)
		}
		if writes, _ := r.committed(t, "rolled_back"); writes != 0 {
			t.Errorf("committed %d writes of a rolled back poll", writes)
		}
		if got := r.idleConn(t); got != pid {
			t.Errorf("the poll connection was replaced (pid %d, then %d)", pid, got)
		}
	})

	t.Run("the handler fails and the ack deadline passes", func(t *testing.T) {
		s := r.subscribe(t, "nacked", subOptions{ackDeadline: time.Second})
		msg := s.message(t)
		tx, err := pollTx(msg.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := record("nacked")(msg.Context(), tx, msg); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(msg.Context(), "SELECT 1/0"); err == nil {
			t.Fatal("division by zero succeeded")
		}
		msg.Nack()
		// The subscriber delivers the message again until its deadline, then commits what
		// the transaction holds: a failed transaction, which PostgreSQL rolls back.
		var e pollEnd
		for ended := false; !ended; {
			select {
			case m := <-s.msgs:
				m.Nack()
			case e = <-s.ends:
				ended = true
			case <-time.After(10 * time.Second):
				t.Fatal("the poll did not end")
			}
		}
		if e.err != nil || e.acquired != 0 {
			t.Errorf("poll ended with %+v, want no error and the connection back", e)
		}
		if writes, cp := r.committed(t, "nacked"); writes != 0 || cp != 0 {
			t.Errorf("committed %d writes and checkpoint %d of a failed transaction", writes, cp)
		}
		if got := r.idleConn(t); got != pid {
			t.Errorf("the poll connection was replaced (pid %d, then %d)", pid, got)
		}
	})
}

// begin starts a poll transaction as the subscriber does.
func (r *pollRig) begin(t *testing.T) *pipelinedTx {
	t.Helper()
	tx, err := newPipelinedBeginner(r.pool).BeginTx(context.Background(), &sql.TxOptions{Isolation: sql.LevelRepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	return tx.(*pipelinedTx)
}

// query runs the poll's query and reads its rows as the subscriber does.
func query(t *testing.T, tx *pipelinedTx) {
	t.Helper()
	rows, err := tx.QueryContext(context.Background(), "SELECT 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var one int
		if err := rows.Scan(&one); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestPipelinedTxEnds(t *testing.T) {
	r := newPollRig(t)
	ctx := context.Background()
	pid := r.idleConn(t)
	checkConn := func(t *testing.T) {
		t.Helper()
		if n := r.pool.Stat().AcquiredConns(); n != 0 {
			t.Errorf("%d connections still out of the pool", n)
		}
		if got := r.idleConn(t); got != pid {
			t.Errorf("the connection was replaced (pid %d, then %d)", pid, got)
		}
	}
	exists := func(t *testing.T, group string) bool {
		t.Helper()
		var n int
		if err := r.db.Pool.QueryRow(ctx, `SELECT count(*) FROM polltx_writes WHERE consumer_group = $1`, group).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	const insert = `INSERT INTO polltx_writes (consumer_group, position) VALUES ($1, 1)`

	t.Run("a transaction that sent nothing commits without a round trip", func(t *testing.T) {
		before := r.writes.Load()
		tx := r.begin(t)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if n := r.writes.Load() - before; n != 0 {
			t.Errorf("%d round trips", n)
		}
		if err := tx.Rollback(); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("rollback after commit: %v, want sql.ErrTxDone", err)
		}
		if err := tx.Commit(); !errors.Is(err, sql.ErrTxDone) {
			t.Errorf("second commit: %v, want sql.ErrTxDone", err)
		}
		checkConn(t)
	})

	t.Run("statements queued before the transaction began commit with it in one round trip", func(t *testing.T) {
		// As the subscriber runs the queries before subscribing: without options, the
		// statements before any query.
		for _, group := range []string{"prepares", "queued"} {
			before := r.writes.Load()
			wtx, err := newPipelinedBeginner(r.pool).BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := wtx.ExecContext(ctx, insert, group)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := res.RowsAffected(); err == nil {
				t.Error("a queued statement reports a row count before it ran")
			}
			if r.writes.Load() != before {
				t.Error("ExecContext sent its statement")
			}
			if err := wtx.Commit(); err != nil {
				t.Fatal(err)
			}
			if !exists(t, group) {
				t.Errorf("the queued statement of %s was not committed", group)
			}
			// The first round prepares the statement, a round trip of its own.
			if n := r.writes.Load() - before; group == "queued" && n != 1 {
				t.Errorf("begin, statement and commit took %d round trips, want 1", n)
			}
		}
		checkConn(t)
	})

	t.Run("a rollback discards queued statements", func(t *testing.T) {
		tx := r.begin(t)
		query(t, tx)
		if _, err := tx.ExecContext(ctx, insert, "discarded"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if exists(t, "discarded") {
			t.Error("a rolled back statement was committed")
		}
		checkConn(t)
	})

	t.Run("a commit after a failed statement reports the rollback", func(t *testing.T) {
		tx := r.begin(t)
		query(t, tx)
		if _, err := tx.pgxTx().Exec(ctx, insert, "failed"); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.pgxTx().Exec(ctx, "SELECT 1/0"); err == nil {
			t.Fatal("division by zero succeeded")
		}
		if err := tx.Commit(); !errors.Is(err, pgx.ErrTxCommitRollback) {
			t.Errorf("commit: %v, want pgx.ErrTxCommitRollback", err)
		}
		if exists(t, "failed") {
			t.Error("a failed transaction was committed")
		}
		checkConn(t)
	})

	t.Run("a query that fails fails QueryContext", func(t *testing.T) {
		tx := r.begin(t)
		var pgErr *pgconn.PgError
		if _, err := tx.QueryContext(ctx, "SELECT 1/0"); !errors.As(err, &pgErr) || pgErr.Code != "22012" {
			t.Errorf("query: %v, want division_by_zero", err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		checkConn(t)
	})

	t.Run("the handler's transaction ends with the poll's", func(t *testing.T) {
		tx := r.begin(t)
		query(t, tx)
		h := tx.pgxTx()
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Exec(ctx, "SELECT 1"); !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("exec after the poll ended: %v, want pgx.ErrTxClosed", err)
		}
		b := &pgx.Batch{}
		b.Queue("SELECT 1")
		if err := h.SendBatch(ctx, b).Close(); !errors.Is(err, pgx.ErrTxClosed) {
			t.Errorf("batch after the poll ended: %v, want pgx.ErrTxClosed", err)
		}
		checkConn(t)
	})

	// The subscriber commits when it stops waiting for a message, even while its handler is
	// still running: the commit must wait for the handler's batch, not race it for the connection.
	t.Run("a commit waits for the handler's batch in flight", func(t *testing.T) {
		tx := r.begin(t)
		query(t, tx)
		b := &pgx.Batch{}
		b.Queue(insert, "raced")
		b.Queue("SELECT pg_sleep(0.2)")
		br := tx.pgxTx().SendBatch(ctx, b)
		committed := make(chan error, 1)
		go func() { committed <- tx.Commit() }()
		select {
		case err := <-committed:
			t.Fatalf("commit returned (%v) while the batch was open", err)
		case <-time.After(100 * time.Millisecond):
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-committed; err != nil {
			t.Fatal(err)
		}
		if !exists(t, "raced") {
			t.Error("the batch's write was not committed")
		}
		checkConn(t)
	})
}
