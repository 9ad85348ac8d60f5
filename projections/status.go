package projections

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Status is one projection as operators see it.
type Status struct {
	Name          string `json:"name"`
	ActiveVersion int    `json:"activeVersion"`
	// Checkpoint is the active version's place in the log, "transaction:position".
	Checkpoint string `json:"checkpoint"`
	// EventsBehind counts the events after the checkpoint: not applied yet, or applied while
	// an older transaction was still running (ADR 6), until that transaction ends.
	EventsBehind int64 `json:"eventsBehind"`
	// LagMs is how long ago the oldest event after the checkpoint was recorded; 0 when it is
	// caught up.
	LagMs int64 `json:"lagMs"`
	// State is "live", "failed" or "rebuilding" (a rebuild of a next version is running).
	State          string `json:"state"`
	FailedPosition *int64 `json:"failedPosition,omitempty"`
	LastError      string `json:"lastError,omitempty"`
}

const statusSQL = `
SELECT v.name, v.active_version,
       COALESCE(c.transaction_id::text || ':' || c.position, ''),
       COALESCE(st.state, 'live'), st.failed_position, COALESCE(st.last_error, ''),
       (SELECT count(*) FROM events e
        WHERE c.consumer_group IS NULL OR (e.transaction_id, e.global_position) > (c.transaction_id, c.position)),
       COALESCE((SELECT (extract(epoch FROM now() - e.recorded_at) * 1000)::bigint FROM events e
                 WHERE c.consumer_group IS NULL OR (e.transaction_id, e.global_position) > (c.transaction_id, c.position)
                 ORDER BY e.transaction_id, e.global_position LIMIT 1), 0),
       EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND l.classid = $1::bigint::oid
                 AND l.objid = ((hashtext(v.name)::bigint + 4294967296) % 4294967296)::oid)
FROM projection_versions v
LEFT JOIN projection_checkpoints c ON c.consumer_group = v.name || '_v' || v.active_version
LEFT JOIN projection_status st ON st.consumer_group = v.name || '_v' || v.active_version
ORDER BY v.name`

// Statuses returns every projection's status.
func Statuses(ctx context.Context, pool *pgxpool.Pool) ([]Status, error) {
	rows, err := pool.Query(ctx, statusSQL, rebuildLockClass)
	if err != nil {
		return nil, fmt.Errorf("projections: status: %w", err)
	}
	var out []Status
	var s Status
	var rebuilding bool
	_, err = pgx.ForEachRow(rows, []any{&s.Name, &s.ActiveVersion, &s.Checkpoint, &s.State, &s.FailedPosition,
		&s.LastError, &s.EventsBehind, &s.LagMs, &rebuilding}, func() error {
		if s.State != "failed" {
			s.FailedPosition, s.LastError = nil, ""
			if rebuilding {
				s.State = "rebuilding"
			} else {
				s.State = "live"
			}
		}
		out = append(out, s)
		s = Status{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("projections: status: %w", err)
	}
	return out, nil
}
