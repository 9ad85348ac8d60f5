package projections

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/eventstore"
)

// Every reader of the log that keeps its place (a projection version, the event relay) keeps
// it as an eventstore.Checkpoint in projection_checkpoints, under its consumer group.

// LoadCheckpoint returns group's checkpoint; the start of the log if it has none yet.
func LoadCheckpoint(ctx context.Context, q eventstore.Querier, group string) (eventstore.Checkpoint, error) {
	rows, _ := q.Query(ctx, `SELECT transaction_id::text::bigint, position FROM projection_checkpoints WHERE consumer_group = $1`, group)
	var tx, pos int64
	if _, err := pgx.ForEachRow(rows, []any{&tx, &pos}, func() error { return nil }); err != nil {
		return eventstore.Checkpoint{}, fmt.Errorf("projections: checkpoint of %s: %w", group, err)
	}
	return eventstore.Checkpoint{TransactionID: uint64(tx), Position: pos}, nil
}

// SaveCheckpoint moves group's checkpoint forward to c, creating it if needed; a checkpoint
// already past c stays where it is, so a reader that lost its lease mid-write never moves
// another's back.
func SaveCheckpoint(ctx context.Context, q execer, group string, c eventstore.Checkpoint) error {
	_, err := q.Exec(ctx, saveCheckpointSQL, group, strconv.FormatUint(c.TransactionID, 10), c.Position)
	if err != nil {
		return fmt.Errorf("projections: save checkpoint of %s: %w", group, err)
	}
	return nil
}

const saveCheckpointSQL = `INSERT INTO projection_checkpoints AS c (consumer_group, transaction_id, position, updated_at)
VALUES ($1, $2::text::xid8, $3, now())
ON CONFLICT (consumer_group) DO UPDATE SET transaction_id = excluded.transaction_id, position = excluded.position,
	updated_at = now()
WHERE (c.transaction_id, c.position) < (excluded.transaction_id, excluded.position)`
