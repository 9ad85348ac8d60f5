package projections

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ledger/ledger/internal/lease"
)

// Status is one reader of the log as operators see it: a projection, or another reader that
// keeps a checkpoint and runs under a lease (AddWorker), such as the event relay.
type Status struct {
	Name string `json:"name"`
	// ActiveVersion is the projection version serving reads; 0 for a reader without versions.
	ActiveVersion int `json:"activeVersion"`
	// Checkpoint is the active version's place in the log, "transaction:position".
	Checkpoint string `json:"checkpoint"`
	// EventsBehind counts the events after the checkpoint, not applied yet.
	EventsBehind int64 `json:"eventsBehind"`
	// LagMs is how long ago the oldest event after the checkpoint was recorded; 0 when it is
	// caught up.
	LagMs int64 `json:"lagMs"`
	// State is "live", "failed" or "rebuilding" (a rebuild of a next version is running).
	State          string `json:"state"`
	FailedPosition *int64 `json:"failedPosition,omitempty"`
	LastError      string `json:"lastError,omitempty"`
	// Active is whether some process holds the reader's lease, that is runs it now.
	Active bool `json:"active"`
}

// statusSQL lists every projection's active version, then every other reader: each consumer
// group that recorded a state and is no projection's version. The events after a checkpoint
// are counted over the log's (transaction, position) index (a reader without a checkpoint is
// at the start), so a reader that keeps up costs little whatever the log's length. The advisory locks are read
// once (pg_locks materialises the server's whole lock table each time it is read): a rebuild
// lock ($1) marks a projection rebuilding, a lease ($2, see acquireLease) a reader some
// process runs.
const statusSQL = `
WITH locks AS MATERIALIZED (
	SELECT l.classid::bigint AS class, l.objid::bigint AS key FROM pg_locks l
	WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
	  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), readers AS (
	SELECT v.name, v.active_version, v.name || '_v' || v.active_version AS grp, 0 AS kind FROM projection_versions v
	UNION ALL
	SELECT st.consumer_group, 0, st.consumer_group, 1 FROM projection_status st
	WHERE NOT EXISTS (SELECT 1 FROM projection_versions v WHERE starts_with(st.consumer_group, v.name || '_v'))
)
SELECT r.name, r.active_version,
       COALESCE(c.transaction_id::text || ':' || c.position, ''),
       COALESCE(st.state, 'live'), st.failed_position, COALESCE(st.last_error, ''),
       (SELECT count(*) FROM events e
        WHERE (e.transaction_id, e.global_position) > (COALESCE(c.transaction_id, '0'), COALESCE(c.position, 0))),
       COALESCE((SELECT greatest((extract(epoch FROM clock_timestamp() - e.recorded_at) * 1000)::bigint, 0) FROM events e
                 WHERE (e.transaction_id, e.global_position) > (COALESCE(c.transaction_id, '0'), COALESCE(c.position, 0))
                 ORDER BY e.transaction_id, e.global_position LIMIT 1), 0),
       r.kind = 0 AND EXISTS (SELECT 1 FROM locks WHERE class = $1 AND key = (hashtext(r.name)::bigint + 4294967296) % 4294967296),
       EXISTS (SELECT 1 FROM locks WHERE class = $2 AND key = (hashtext(r.grp)::bigint + 4294967296) % 4294967296)
FROM readers r
LEFT JOIN projection_checkpoints c ON c.consumer_group = r.grp
LEFT JOIN projection_status st ON st.consumer_group = r.grp
ORDER BY r.kind, r.name`

// statusScansSQL sets, for the status statement's transaction only, how it is planned. The
// statement is prepared once and planned generically, without the checkpoints' values, so the
// planner guesses that a third of the log follows any of them and, over a long log, scans the
// whole table to count the handful a reader that keeps up has left (about half a second per
// reader at 1,000,000 events): sequential and bitmap scans are off, so the counts go through
// the log's index. Turning them off makes the plan's cost look enormous (the small tables have
// no other way to be read), which would buy seconds of JIT compiling: JIT is off too (ADR 17).
const statusScansSQL = `SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
	set_config('jit', 'off', true)`

// Statuses returns every projection's status, then every other reader's.
func Statuses(ctx context.Context, pool *pgxpool.Pool) ([]Status, error) {
	var out []Status
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, statusScansSQL); err != nil {
			return err
		}
		var s Status
		var rebuilding bool
		collect := func() error {
			if s.State != "failed" {
				s.FailedPosition, s.LastError, s.State = nil, "", "live"
				if rebuilding {
					s.State = "rebuilding"
				}
			}
			out = append(out, s)
			s = Status{}
			return nil
		}
		rows, _ := tx.Query(ctx, statusSQL, rebuildLockClass, lease.Class) // an error comes back from the rows
		_, err := pgx.ForEachRow(rows, []any{&s.Name, &s.ActiveVersion, &s.Checkpoint, &s.State, &s.FailedPosition,
			&s.LastError, &s.EventsBehind, &s.LagMs, &rebuilding, &s.Active}, collect)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("projections: status: %w", err)
	}
	return out, nil
}

// RecordReaderState records the state of a reader run with AddWorker, for Statuses: "live"
// when err is nil, else "failed" with err as its last error. A reader records it when its
// state changes, not on every attempt.
func RecordReaderState(ctx context.Context, q execer, group string, err error) error {
	if err != nil {
		return recordState(ctx, q, group, "failed", err)
	}
	return recordState(ctx, q, group, "live", nil)
}
