package eventstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// readLogBackSQL is ReadLogSQL walked the other way: the page of the global log before a
// checkpoint ($1, $2), newest first, under the same fence, at most $3 rows. A zero checkpoint
// means the end of the readable log.
const readLogBackSQL = `SELECT ` + eventColumns + ` FROM events
WHERE ($1::xid8 = '0'::xid8 OR (transaction_id, global_position) < ($1::xid8, $2::bigint))
  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY transaction_id DESC, global_position DESC
LIMIT $3`

// ReadLogBefore returns up to limit events of the global log before the checkpoint, newest
// first: a page for people reading the log backwards. The zero Checkpoint reads from the end of
// the readable log. Readers that follow the log use ReadLog.
func (s *Store) ReadLogBefore(ctx context.Context, before Checkpoint, limit int) ([]RecordedEvent, error) {
	if limit <= 0 {
		return nil, invalid("read log backwards: limit %d must be positive", limit)
	}
	rows, err := s.pool.Query(ctx, readLogBackSQL, before.TransactionID, before.Position, limit)
	if err != nil {
		return nil, fmt.Errorf("eventstore: read log backwards: %w", err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RecordedEvent, error) { return scanEvent(r) })
	if err != nil {
		return nil, fmt.Errorf("eventstore: read log backwards: %w", err)
	}
	return evs, nil
}
