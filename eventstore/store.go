package eventstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ledger/ledger/internal/group"
)

// Store is the PostgreSQL event store.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time

	// Transactions retried after a deadlock or serialization failure. Locking streams in a
	// fixed order should keep this at zero; it is counted so that a regression shows.
	txRetries atomic.Uint64
	conflicts atomic.Uint64

	// afterCommit hooks run after every committed append (in-process wake-ups).
	afterCommit []func(AppendResult)

	group committer

	// observe, when set, sees every transaction of appends.
	observe func(Write)
}

// Write describes one transaction of appends (a group, or one append alone), for observers.
type Write struct {
	Appends  int
	Duration time.Duration
	Err      error // nil when it committed (its appends may still have been refused)
}

// WithWriteObserver registers fn to see every transaction of appends, on the writing
// goroutine: how many appends it carried and how long it took. It must be quick.
func WithWriteObserver(fn func(Write)) Option { return func(s *Store) { s.observe = fn } }

// Option configures a Store.
type Option func(*Store)

// WithClock replaces the clock that stamps recorded-at times (tests).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithAfterCommit registers fn to run after every committed append, on the appending
// goroutine. It must be quick and must not block (signal a channel, do not do I/O).
func WithAfterCommit(fn func(AppendResult)) Option {
	return func(s *Store) { s.afterCommit = append(s.afterCommit, fn) }
}

// New returns a Store over pool.
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, now: time.Now}
	s.group.s = s
	s.group.batch = group.New[*request](defaultGroupWriters, defaultGroupSize)
	for _, o := range opts {
		o(s)
	}
	return s
}

// Pool returns the connection pool the store writes through.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Stats are the store's counters since it was created.
type Stats struct {
	// Conflicts counts appends refused with a ConcurrencyError.
	Conflicts uint64
	// TxRetries counts appends retried after a deadlock or serialization failure.
	TxRetries uint64
	// Groups counts group transactions and GroupedAppends the appends they carried.
	Groups, GroupedAppends uint64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	groups, grouped := s.group.batch.Stats()
	return Stats{Conflicts: s.conflicts.Load(), TxRetries: s.txRetries.Load(),
		Groups: groups, GroupedAppends: grouped}
}

// AppendOption changes one append.
type AppendOption func(*appendOptions)

type appendOptions struct {
	inTx []func(context.Context, pgx.Tx) error
}

// InTransaction runs fn inside the append's transaction after the events are written and
// before commit; an error from fn aborts the whole append. It is how data that must be created
// with the events (an identity row, an idempotency record) is kept atomic with them.
func InTransaction(fn func(ctx context.Context, tx pgx.Tx) error) AppendOption {
	return func(o *appendOptions) { o.inTx = append(o.inTx, fn) }
}

// maxTxAttempts bounds retries of deadlocks and serialization failures.
const maxTxAttempts = 3

// Append writes the events of every stream in appends in one transaction: all of them or none.
// Each stream's version is checked against its expectation under a lock; a mismatch is a
// *ConcurrencyError. Streams are locked in key order so that concurrent appends touching the
// same streams in opposite orders cannot deadlock.
//
// Concurrent appends share transactions (group commit): while one group is being written, the
// appends that arrive queue up, and the next group takes them all. Each append keeps its own
// outcome: one whose expectation fails gets its *ConcurrencyError and writes nothing, without
// failing the others. An append with InTransaction hooks is written alone.
//
// Append returns when ctx ends, with its error, at the latest; the append is then written or
// not, as with any failure after COMMIT was sent, but never in part.
func (s *Store) Append(ctx context.Context, appends []StreamAppend, opts ...AppendOption) (AppendResult, error) {
	var o appendOptions
	for _, opt := range opts {
		opt(&o)
	}
	batch, err := s.prepare(appends)
	if err != nil {
		return AppendResult{}, err
	}
	req := &request{ctx: ctx, batch: batch, done: make(chan struct{})}
	if len(o.inTx) > 0 {
		s.writeAlone(ctx, req, o.inTx)
	} else if !s.group.submit(req) {
		return AppendResult{}, fmt.Errorf("eventstore: append: %w", ctx.Err())
	}
	if req.err != nil {
		return AppendResult{}, req.err
	}
	return req.res, nil
}

// request is one Append on its way through a group.
type request struct {
	ctx   context.Context
	batch []preparedStream
	res   AppendResult
	err   error
	done  chan struct{} // closed once res or err is set
}

func (r *request) finish(res AppendResult, err error) {
	r.res, r.err = res, err
	close(r.done)
}

// The request as a group.Request.
func (r *request) Context() context.Context { return r.ctx }
func (r *request) Done() <-chan struct{}    { return r.done }
func (r *request) Abandon(err error)        { r.finish(AppendResult{}, err) }

// writeAlone writes one append in a transaction of its own, retrying deadlocks and
// serialization failures.
func (s *Store) writeAlone(ctx context.Context, req *request, inTx []func(context.Context, pgx.Tx) error) {
	for attempt := 1; ; attempt++ {
		err := s.writeGroup(ctx, []*request{req}, inTx)
		if err == nil {
			return
		}
		if attempt < maxTxAttempts && isTransient(err) && ctx.Err() == nil {
			s.txRetries.Add(1)
			continue
		}
		req.finish(AppendResult{}, err)
		return
	}
}

// preparedStream is a StreamAppend validated and encoded, ready to be written.
type preparedStream struct {
	streamID string
	expected ExpectedVersion
	events   []preparedEvent
	snapshot []byte // JSON or nil
}

type preparedEvent struct {
	id            uuid.UUID
	eventType     string
	schemaVersion int
	payload       []byte
	metadata      []byte
	recordedAt    time.Time
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}

// prepare refuses bad input before the database is touched and sorts streams into lock order.
func (s *Store) prepare(appends []StreamAppend) ([]preparedStream, error) {
	if len(appends) == 0 {
		return nil, invalid("append needs at least one stream")
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	seenStream := make(map[string]bool, len(appends))
	seenEvent := make(map[uuid.UUID]bool)
	out := make([]preparedStream, 0, len(appends))
	for _, a := range appends {
		if a.StreamID == "" {
			return nil, invalid("empty stream id")
		}
		if err := CheckText(a.StreamID); err != nil {
			return nil, invalid("stream id %q: %v", a.StreamID, err)
		}
		if seenStream[a.StreamID] {
			return nil, invalid("stream %q appears twice in one append", a.StreamID)
		}
		seenStream[a.StreamID] = true
		if len(a.Events) == 0 {
			return nil, invalid("stream %q: no events", a.StreamID)
		}
		if a.Expected.kind == expectExact && a.Expected.version < 0 {
			return nil, invalid("stream %q: negative expected version %d", a.StreamID, a.Expected.version)
		}
		ps := preparedStream{streamID: a.StreamID, expected: a.Expected}
		if a.Snapshot != nil {
			if _, ok := a.Expected.known(); !ok {
				return nil, invalid("stream %q: a snapshot needs an exact expected version", a.StreamID)
			}
			b, err := encodeJSON(a.Snapshot.State)
			if err != nil {
				return nil, invalid("stream %q: snapshot: %v", a.StreamID, err)
			}
			ps.snapshot = b
		}
		for _, e := range a.Events {
			if e.Type == "" {
				return nil, invalid("stream %q: event without a type", a.StreamID)
			}
			if err := CheckText(e.Type); err != nil {
				return nil, invalid("stream %q: event type %q: %v", a.StreamID, e.Type, err)
			}
			id := e.ID
			if id == uuid.Nil {
				var err error
				if id, err = uuid.NewV7(); err != nil {
					return nil, fmt.Errorf("eventstore: new event id: %w", err)
				}
			}
			if seenEvent[id] {
				return nil, invalid("event id %s appears twice in one append", id)
			}
			seenEvent[id] = true
			payload, err := encodeJSON(e.Payload)
			if err != nil {
				return nil, invalid("stream %q: event %s payload: %v", a.StreamID, e.Type, err)
			}
			meta, err := encodeJSON(e.Metadata)
			if err != nil {
				return nil, invalid("stream %q: event %s metadata: %v", a.StreamID, e.Type, err)
			}
			ps.events = append(ps.events, preparedEvent{
				id: id, eventType: e.Type, schemaVersion: e.SchemaVersion,
				payload: payload, metadata: meta, recordedAt: now,
			})
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b preparedStream) int { return cmp.Compare(a.streamID, b.streamID) })
	return out, nil
}

// CheckText refuses what a PostgreSQL text column cannot hold: NUL characters and bytes that
// are not UTF-8. The database would refuse them too, but as a failed transaction (a server
// error for the caller, and a whole group rewritten append by append) instead of bad input.
// Callers that pass client text to queries check it with this too.
func CheckText(s string) error {
	switch {
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("contains a NUL character")
	}
	return nil
}

// encodeJSON returns the JSON document v is stored as: raw JSON as it is (it must be valid
// JSON in UTF-8), anything else marshalled. The document is stored and hashed as these bytes.
func encodeJSON(v any) ([]byte, error) {
	var raw []byte
	switch x := v.(type) {
	case json.RawMessage:
		raw = x
	case []byte:
		raw = x
	default:
		return json.Marshal(v)
	}
	if !json.Valid(raw) || !utf8.Valid(raw) {
		return nil, errors.New("not valid JSON in UTF-8")
	}
	return raw, nil
}

// lockStreamKeys serialises the appends to each stream with transaction-scoped advisory locks,
// taken in key order (so two appends touching the same streams in opposite orders cannot
// deadlock) and, crucially, before the transaction has an xid: advisory locks do not assign
// one, while the first row write or row lock does. So an append gets its xid only once it holds
// all of its streams, and every later append to one of them gets a larger xid. That makes each
// stream's versions ascend in the readers' (transaction_id, global_position) order; with row
// locks alone, an append could take its xid locking one stream, wait for another, and write
// that stream's next version under an xid smaller than the previous version's.
const lockStreamKeys = `
SELECT count(pg_advisory_xact_lock(` + advisoryClass + `, k))
FROM (SELECT DISTINCT hashtext(id) AS k FROM unnest($1::text[]) AS id ORDER BY k) keys`

// advisoryClass is the first key of the stream locks, keeping them apart from other advisory
// locks (migrations, rebuilds).
const advisoryClass = "1279607885" // "LEDM"

// readHeads reads the heads of the streams; a stream without a row has no events yet. It is a
// plain SELECT, without FOR UPDATE: under READ COMMITTED its snapshot is taken when it starts,
// after lockStreamKeys has been granted every lock, and a transaction's commit is visible before
// its locks are released, so it sees what the previous holder of each lock committed. Only
// appends write head rows, and only under these locks, so the heads stay as read until this
// transaction ends; a row lock would add nothing but a write to every head row (its xmax and a
// WAL record). Should a writer ever bypass the locks and add events, this append's events then
// take versions already taken and the unique (stream_id, stream_version) fails it, rather than
// forking the stream.
const readHeads = `
SELECT stream_id, version, last_hash FROM streams WHERE stream_id = ANY($1::text[])`

const insertEvents = `
INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version,
                    payload_bytes, metadata_bytes, recorded_at, hash, hash_version)
SELECT *, $10::smallint FROM unnest($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::int[],
                     $6::bytea[], $7::bytea[], $8::timestamptz[], $9::bytea[])
RETURNING stream_id, stream_version, global_position, transaction_id`

// writeHeads creates the head rows of new streams and moves those of existing ones, one row
// version per stream and transaction. Under the stream locks no other transaction inserts the
// same stream id, so ON CONFLICT finds an existing row in the unique index and updates it in
// place of inserting: no speculative insertion is left dead.
const writeHeads = `
INSERT INTO streams AS s (stream_id, version, last_hash, snapshot, snapshot_version)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::jsonb[], $5::bigint[])
ON CONFLICT (stream_id) DO UPDATE
SET version = excluded.version,
    last_hash = excluded.last_hash,
    snapshot = CASE WHEN excluded.snapshot IS NULL THEN s.snapshot ELSE excluded.snapshot END,
    snapshot_version = CASE WHEN excluded.snapshot IS NULL THEN s.snapshot_version ELSE excluded.snapshot_version END,
    updated_at = now()`

// writeGroup writes the requests in one transaction and finishes each of them: with its
// result, or with its *ConcurrencyError when its expectations do not hold (it then writes
// nothing and the others go on). Any other failure leaves every request unfinished and is
// returned; nothing was written.
//
// Appends are a large share of all round trips, so the transaction takes two on one
// connection: BEGIN goes in the batch that locks the streams, and COMMIT in the batch that
// writes them. With inTx hooks the commit waits for the hooks, which makes three.
func (s *Store) writeGroup(ctx context.Context, reqs []*request, inTx []func(context.Context, pgx.Tx) error) (err error) {
	if s.observe != nil {
		began := time.Now()
		defer func() { s.observe(Write{Appends: len(reqs), Duration: time.Since(began), Err: err}) }()
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("eventstore: acquire connection: %w", err)
	}
	defer conn.Release()
	defer func() {
		if err != nil {
			leaveTransaction(ctx, conn.Conn())
		}
	}()

	var ids []string
	for _, r := range reqs {
		for _, ps := range r.batch {
			ids = append(ids, ps.streamID)
		}
	}
	slices.Sort(ids) // one row per stream: several appends of a group may share a stream
	ids = slices.Compact(ids)
	heads := make(map[string]head, len(ids))
	locks := &pgx.Batch{}
	// READ COMMITTED whatever the server's default: readHeads relies on taking its snapshot
	// after the locks are granted, not at the transaction's first statement.
	locks.BeginTx(pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	locks.Queue(lockStreamKeys, ids)
	locks.Queue(readHeads, ids).Query(func(rows pgx.Rows) error {
		var id string
		var h head
		_, err := pgx.ForEachRow(rows, []any{&id, &h.version, &h.lastHash}, func() error {
			heads[id] = h
			return nil
		})
		return err
	})
	br := conn.SendBatch(ctx, locks)
	tx := br.Tx()
	if err := br.Close(); err != nil {
		return fmt.Errorf("eventstore: lock streams: %w", err)
	}
	// A COMMIT outside a transaction block only warns, so make sure the BEGIN took.
	if st := conn.Conn().PgConn().TxStatus(); st != 'T' {
		return fmt.Errorf("eventstore: lock streams: transaction status %q after BEGIN", st)
	}

	w := newGroupWrite(len(ids))
	accepted := make([]*request, 0, len(reqs))
	results := make([]AppendResult, 0, len(reqs))
	var refused []*request
	var conflicts []error
	for _, r := range reqs {
		res, cerr := w.add(heads, r.batch)
		if cerr != nil {
			refused, conflicts = append(refused, r), append(conflicts, cerr)
			continue
		}
		accepted = append(accepted, r)
		results = append(results, res)
	}
	// Requests are finished only once the outcome is final: a group that fails is written
	// again, and its refusals are decided again.
	finishRefused := func() {
		for i, r := range refused {
			s.conflicts.Add(1)
			r.finish(AppendResult{}, conflicts[i])
		}
	}
	if len(accepted) == 0 {
		if err := tx.Rollback(ctx); err != nil {
			return fmt.Errorf("eventstore: rollback: %w", err)
		}
		finishRefused()
		return nil
	}

	type key struct {
		stream  string
		version int64
	}
	positions := make(map[key]Checkpoint, len(w.evStream))
	b := &pgx.Batch{}
	// These rows are read after the COMMIT queued below has been sent, so a failure to scan
	// them could no longer stop it and would leave the outcome unknown, like a connection lost
	// during COMMIT: the targets are the columns' own types (all NOT NULL), which cannot fail.
	b.Queue(insertEvents, w.evStream, w.evVersion, w.evID, w.evType, w.evSchema, w.evPayload, w.evMeta, w.evAt, w.evHash, hashVersion).
		Query(func(rows pgx.Rows) error {
			var k key
			var cp Checkpoint
			_, err := pgx.ForEachRow(rows, []any{&k.stream, &k.version, &cp.Position, &cp.TransactionID}, func() error {
				positions[k] = cp
				return nil
			})
			return err
		})
	hd := w.headArrays()
	written := false
	b.Queue(writeHeads, hd.stream, hd.version, hd.hash, hd.snapshot, hd.snapshotVersion).
		Exec(func(pgconn.CommandTag) error { written = true; return nil })
	if len(inTx) == 0 {
		// When a statement above fails, PostgreSQL skips the rest of the batch, this COMMIT
		// included, and the transaction stays open and aborted until leaveTransaction ends it.
		b.Queue("commit").Exec(committed)
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		switch {
		case isConstraint(err, "events_event_id_key"):
			return fmt.Errorf("%w: %v", ErrDuplicateEvent, err)
		case written:
			return fmt.Errorf("eventstore: commit: %w", err)
		}
		return fmt.Errorf("eventstore: write events: %w", err)
	}
	if len(inTx) > 0 {
		for _, fn := range inTx {
			if err := fn(ctx, tx); err != nil {
				return err
			}
		}
		ct, err := conn.Exec(ctx, "commit")
		if err == nil {
			err = committed(ct)
		}
		if err != nil {
			return fmt.Errorf("eventstore: commit: %w", err)
		}
	}
	finishRefused()
	for i, r := range accepted {
		res := results[i]
		for _, sr := range res.Streams {
			for v := sr.FromVersion + 1; v <= sr.ToVersion; v++ {
				if cp := positions[key{sr.StreamID, v}]; cp.Position > res.Checkpoint.Position {
					res.Checkpoint = cp
				}
			}
		}
		for _, fn := range s.afterCommit {
			fn(res)
		}
		r.finish(res, nil)
	}
	return nil
}

// committed turns a COMMIT that PostgreSQL answered with ROLLBACK, because its transaction
// had failed, into an error.
func committed(ct pgconn.CommandTag) error {
	if ct.String() != "COMMIT" {
		return fmt.Errorf("%w (%s)", pgx.ErrTxCommitRollback, ct)
	}
	return nil
}

// rollbackTimeout bounds the ROLLBACK after a failed append, which runs even when the
// append's own context was cancelled, though not past its deadline.
const rollbackTimeout = 5 * time.Second

// leaveTransaction ends whatever transaction a failed append left on conn, so that conn goes
// back to the pool outside one. A failed statement leaves its transaction open and aborted
// until ROLLBACK; a connection that cannot be brought back for sure is closed, and the pool
// then drops it.
func leaveTransaction(ctx context.Context, conn *pgx.Conn) {
	if conn.IsClosed() || conn.PgConn().TxStatus() == 'I' {
		return
	}
	end := time.Now().Add(rollbackTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(end) {
		end = d // past the deadline its caller is gone: close the connection rather than wait
	}
	ctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), end)
	defer cancel()
	if _, err := conn.Exec(ctx, "rollback"); err != nil || conn.PgConn().TxStatus() != 'I' {
		// The append already failed; a connection that will not roll back is only discarded.
		_ = conn.Close(ctx)
	}
}

// isTransient reports whether err is a deadlock or serialization failure, after which the
// whole transaction can safely run again.
func isTransient(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

func isConstraint(err error, name string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == name
}

// PayloadSQL selects an event's payload as the bytes its hash covers, whatever its hash rule:
// payload_bytes as stored (rule 2), or jsonb's rendering of payload (rule 1), which is what
// the rule re-encodes. It names the columns of the events table without a qualifier.
const PayloadSQL = `COALESCE(payload_bytes, convert_to(payload::text, 'UTF8'))`

// metadataSQL is PayloadSQL for the metadata.
const metadataSQL = `COALESCE(metadata_bytes, convert_to(metadata::text, 'UTF8'))`

const eventColumns = `global_position, transaction_id, stream_id, stream_version, event_id,
       event_type, schema_version, ` + PayloadSQL + ` AS payload, ` + metadataSQL + ` AS metadata, recorded_at, hash, hash_version`

func scanEvent(row pgx.Row) (RecordedEvent, error) {
	var e RecordedEvent
	var schema int32
	var hashVersion int16
	err := row.Scan(&e.Position, &e.TransactionID, &e.StreamID, &e.Version, &e.ID,
		&e.Type, &schema, &e.Payload, &e.RawMetadata, &e.RecordedAt, &e.Hash, &hashVersion)
	if err != nil {
		return RecordedEvent{}, err
	}
	e.SchemaVersion, e.HashVersion = int(schema), int(hashVersion)
	return e, nil
}

// Load returns the events of streamID with a version above after, in version order.
func (s *Store) Load(ctx context.Context, streamID string, after int64) ([]RecordedEvent, error) {
	return s.loadStream(ctx, streamID, after, 0)
}

// StreamState is what loading an aggregate needs: the newest snapshot and the events after it.
type StreamState struct {
	// Version is the stream's head version (0: no such stream).
	Version int64
	// Snapshot is the folded state at SnapshotVersion, or nil when there is none.
	Snapshot        json.RawMessage
	SnapshotVersion int64
	// Events are the events after SnapshotVersion, in version order.
	Events []RecordedEvent
}

// LoadState returns streamID's snapshot and the events after it, read in one statement so the
// two agree.
func (s *Store) LoadState(ctx context.Context, streamID string) (StreamState, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT s.version, s.snapshot, s.snapshot_version,
		       e.global_position, e.transaction_id, e.stream_id, e.stream_version, e.event_id,
		       e.event_type, e.schema_version, `+PayloadSQL+`, `+metadataSQL+`, e.recorded_at, e.hash, e.hash_version
		FROM streams s
		LEFT JOIN events e ON e.stream_id = s.stream_id AND e.stream_version > s.snapshot_version
		WHERE s.stream_id = $1
		ORDER BY e.stream_version`, streamID)
	if err != nil {
		return StreamState{}, fmt.Errorf("eventstore: load state %q: %w", streamID, err)
	}
	defer rows.Close()
	var st StreamState
	for rows.Next() {
		var (
			pos, ver    *int64
			txID        *uint64
			sid, typ    *string
			id          *uuid.UUID
			schema      *int32
			payload, md []byte
			at          *time.Time
			hash        []byte
			hashVersion *int16
		)
		if err := rows.Scan(&st.Version, &st.Snapshot, &st.SnapshotVersion,
			&pos, &txID, &sid, &ver, &id, &typ, &schema, &payload, &md, &at, &hash, &hashVersion); err != nil {
			return StreamState{}, fmt.Errorf("eventstore: load state %q: %w", streamID, err)
		}
		if pos == nil {
			continue // a head without events after the snapshot
		}
		e := RecordedEvent{Position: *pos, TransactionID: *txID, StreamID: *sid, Version: *ver, ID: *id,
			Type: *typ, SchemaVersion: int(*schema), Payload: payload, RawMetadata: md, RecordedAt: *at, Hash: hash,
			HashVersion: int(*hashVersion)}
		st.Events = append(st.Events, e)
	}
	if err := rows.Err(); err != nil {
		return StreamState{}, fmt.Errorf("eventstore: load state %q: %w", streamID, err)
	}
	if bytes.Equal(st.Snapshot, []byte("null")) {
		st.Snapshot = nil
	}
	return st, nil
}
