package eventstore

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The fenced log reader: every reader of the global log (projectors, rebuild, export, verify,
// the event relay) reads it with LogPageSQL: through ReadLog, which streams the page's rows,
// or WalkLog, which reads a part of the log page after page through it, or, inside a
// transaction of its own, as one row of arrays (LogBatchSQL, ScanLogBatch).
//
// A page is the events after a checkpoint in (transaction id, position) order, only from
// transactions older than every running one (the fence): a transaction still open may commit
// events with a smaller transaction id than ones already committed, and reading past it would
// skip them.

// LogPageSQL returns the statement reading one page of the log after the checkpoint after (an
// SQL row expression of a transaction id and a position, e.g. "($1::xid8, $2::bigint)" or a
// subquery), at most limit (an SQL expression) events, one row per event.
func LogPageSQL(after, limit string) string {
	return `SELECT ` + eventColumns + ` FROM events
WHERE (transaction_id, global_position) > ` + after + ` AND ` + fenceSQL + `
ORDER BY transaction_id, global_position
LIMIT ` + limit
}

// LogBatchSQL is LogPageSQL as one row of arrays, in binary: a whole page in one row, for a
// reader that takes a page as one message. ScanLogBatch reads its row.
func LogBatchSQL(after, limit string) string {
	return `WITH page AS (` + LogPageSQL(after, limit) + `)
SELECT count(*), array_agg(global_position), array_agg(transaction_id::text::bigint), array_agg(stream_id),
       array_agg(stream_version), array_agg(event_id), array_agg(event_type), array_agg(schema_version),
       array_agg(payload), array_agg(metadata), array_agg(recorded_at), array_agg(hash), array_agg(hash_version)
FROM page`
}

// fenceSQL keeps a reader below the log's fence: the oldest running transaction.
const fenceSQL = `transaction_id < pg_snapshot_xmin(pg_current_snapshot())`

// ReadLogBefore returns up to limit events of the log before the checkpoint, below the same
// fence, newest first: a page for people reading the log backwards (the zero Checkpoint reads
// from its end). Readers that follow the log use ReadLog.
func (s *Store) ReadLogBefore(ctx context.Context, before Checkpoint, limit int) ([]RecordedEvent, error) {
	if limit <= 0 {
		return nil, invalid("read log backwards: limit %d must be positive", limit)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE ($1::xid8 = '0'::xid8 OR (transaction_id, global_position) < ($1::xid8, $2::bigint)) AND `+fenceSQL+`
		ORDER BY transaction_id DESC, global_position DESC LIMIT $3`, before.TransactionID, before.Position, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read log backwards: %w", err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RecordedEvent, error) { return scanEvent(r) })
	if err != nil {
		return nil, fmt.Errorf("eventstore: read log backwards: %w", err)
	}
	return evs, nil
}

// Scanner reads one row.
type Scanner interface {
	Scan(dest ...any) error
}

// ScanLogBatch reads the row of a LogBatchSQL statement: the page's events in log order.
func ScanLogBatch(row Scanner) ([]RecordedEvent, error) {
	var (
		n                    int
		positions, txs, vers []int64
		streams, types       []string
		ids                  []uuid.UUID
		schemas              []int32
		hashVers             []int16
		payloads, metadata   [][]byte
		hashes               [][]byte
		recordedAt           []time.Time
	)
	if err := row.Scan(&n, &positions, &txs, &streams, &vers, &ids, &types, &schemas, &payloads, &metadata,
		&recordedAt, &hashes, &hashVers); err != nil {
		return nil, fmt.Errorf("eventstore: read log page: %w", err)
	}
	for _, l := range []int{len(positions), len(txs), len(streams), len(vers), len(ids), len(types), len(schemas),
		len(payloads), len(metadata), len(recordedAt), len(hashes), len(hashVers)} {
		if l != n {
			return nil, fmt.Errorf("eventstore: read log page: %d events with a column of %d", n, l)
		}
	}
	page := make([]RecordedEvent, n)
	for i := range page {
		e := &page[i]
		*e = RecordedEvent{Position: positions[i], TransactionID: uint64(txs[i]), StreamID: streams[i],
			Version: vers[i], ID: ids[i], Type: types[i], SchemaVersion: int(schemas[i]), Payload: payloads[i],
			RawMetadata: metadata[i], RecordedAt: recordedAt[i], Hash: hashes[i], HashVersion: int(hashVers[i])}
	}
	// The aggregates see the rows in the page's order; sorting again costs nothing when it
	// holds and keeps the log order when it would not.
	if !slices.IsSortedFunc(page, logOrder) {
		slices.SortFunc(page, logOrder)
	}
	return page, nil
}

func logOrder(a, b RecordedEvent) int { return a.Checkpoint().Compare(b.Checkpoint()) }

// ReadLog returns up to limit events of the global log after the checkpoint, in log order. An
// empty page means the reader has caught up with every committed transaction below the fence.
func (s *Store) ReadLog(ctx context.Context, after Checkpoint, limit int) ([]RecordedEvent, error) {
	return ReadLog(ctx, s.pool, after, limit)
}

// WalkLog is the package's WalkLog through the store's pool.
func (s *Store) WalkLog(ctx context.Context, r LogRange, pageSize int, fn func(page []RecordedEvent) error) (Checkpoint, error) {
	return WalkLog(ctx, s.pool, r, pageSize, fn)
}

// Querier runs a query: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ReadLog is Store.ReadLog through q.
func ReadLog(ctx context.Context, q Querier, after Checkpoint, limit int) ([]RecordedEvent, error) {
	if limit <= 0 {
		return nil, invalid("read log: limit %d must be positive", limit)
	}
	rows, err := q.Query(ctx, readLogSQL, after.TransactionID, after.Position, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read log: %w", err)
	}
	// A page sized up front: growing it row by row copies and clears more than scanning costs.
	page := make([]RecordedEvent, 0, min(limit, maxPageHint))
	page, err = pgx.AppendRows(page, rows, func(r pgx.CollectableRow) (RecordedEvent, error) { return scanEvent(r) })
	if err != nil {
		return nil, fmt.Errorf("eventstore: read log: %w", err)
	}
	return page, nil
}

// LogRange is the part of the log a walk reads: the events after After, up to and including
// Until, at most Max of them (0: no bound). Until is EndOfLog to read as far as is readable; the
// zero Until is the start of the log, which is where an empty log's head (LogHead) stands, so
// a range up to an empty log's head holds nothing.
type LogRange struct {
	After, Until Checkpoint
	Max          int64
}

// EndOfLog is the checkpoint after every event the log will ever hold.
var EndOfLog = Checkpoint{TransactionID: math.MaxUint64, Position: math.MaxInt64}

// WalkLog reads r through q, page after page of at most pageSize events, and calls fn with
// each page in log order; it reads the next page while fn handles one, so fn must not use q.
// It stops once a page comes back short (the walk has caught up with what is readable below
// the fence), at Until or Max, or at fn's first error, which it returns. last is the
// checkpoint of the last event fn was given (r.After when none): a walk that ends early
// resumes after it.
func WalkLog(ctx context.Context, q Querier, r LogRange, pageSize int, fn func(page []RecordedEvent) error) (last Checkpoint, err error) {
	if pageSize <= 0 {
		return r.After, invalid("walk the log: page size %d must be positive", pageSize)
	}
	ctx, cancel := context.WithCancel(ctx)
	pages := make(chan []RecordedEvent, 1)
	var readErr error // set before pages closes
	go func() {
		defer close(pages)
		readErr = readAhead(ctx, q, r, pageSize, pages)
	}()
	defer func() {
		cancel()
		for range pages { // the reader has stopped once pages is closed
		}
	}()
	last = r.After
	for page := range pages {
		if err := fn(page); err != nil {
			return last, err
		}
		last = page[len(page)-1].Checkpoint()
	}
	return last, readErr
}

// readAhead sends WalkLog's pages: none of them empty, the last one short or ending the range.
func readAhead(ctx context.Context, q Querier, r LogRange, pageSize int, pages chan<- []RecordedEvent) error {
	after, read := r.After, int64(0)
	for after.Before(r.Until) && (r.Max <= 0 || read < r.Max) {
		limit := pageSize
		if r.Max > 0 {
			limit = int(min(int64(pageSize), r.Max-read))
		}
		page, err := ReadLog(ctx, q, after, limit)
		if err != nil {
			return err
		}
		n := len(page)
		for n > 0 && r.Until.Before(page[n-1].Checkpoint()) {
			n--
		}
		if n == 0 {
			return nil
		}
		select {
		case pages <- page[:n]:
		case <-ctx.Done():
			return ctx.Err()
		}
		if n < limit {
			return nil
		}
		after, read = page[n-1].Checkpoint(), read+int64(n)
	}
	return nil
}

// CountLog counts the events of the log after after, up to and including until (EndOfLog: to
// its end), below the fence or not: it tells how far a reader has to go.
func CountLog(ctx context.Context, q Querier, after, until Checkpoint) (int64, error) {
	var n int64
	rows, _ := q.Query(ctx, `SELECT count(*) FROM events
		WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint)
		  AND (transaction_id, global_position) <= ($3::xid8, $4::bigint)`,
		after.TransactionID, after.Position, until.TransactionID, until.Position)
	if _, err := pgx.ForEachRow(rows, []any{&n}, func() error { return nil }); err != nil {
		return 0, fmt.Errorf("eventstore: count the log: %w", err)
	}
	return n, nil
}

// maxPageHint bounds the room ReadLog reserves for a page before it knows its length.
const maxPageHint = 20_000

var readLogSQL = LogPageSQL("($1::xid8, $2::bigint)", "$3")

var _ Querier = (*pgxpool.Pool)(nil)
