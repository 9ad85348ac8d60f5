package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// The log's fence is the oldest running transaction: its readers read only below it (see
// LogPageSQL). These helpers tell where it stands.

// WaitSettled returns once every transaction with an id below xid has ended (usually within
// milliseconds): from then on the log's readers (ReadLog, LogHead) read every event those
// transactions committed. It polls the fence, the oldest running transaction, until ctx ends.
func (s *Store) WaitSettled(ctx context.Context, xid uint64) error {
	for {
		var settled bool
		if err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot()) >= $1::text::xid8`,
			strconv.FormatUint(xid, 10)).Scan(&settled); err != nil {
			return fmt.Errorf("eventstore: wait for the log's fence: %w", err)
		}
		if settled {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// LogHead returns the checkpoint of the last event a log reader can read now, below the oldest
// running transaction; the zero Checkpoint when there is none. Every event at or before it
// stays readable in ReadLog, whatever commits later, so it is a fixed end for a replay.
func (s *Store) LogHead(ctx context.Context) (Checkpoint, error) {
	var c Checkpoint
	err := s.pool.QueryRow(ctx, `SELECT transaction_id, global_position FROM events
		WHERE `+fenceSQL+`
		ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&c.TransactionID, &c.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("eventstore: log head: %w", err)
	}
	return c, nil
}

// LogHeadNow is LogHead once every transaction that was running when it was called has
// ended: the end of the log as of the call, every event committed before it included.
func (s *Store) LogHeadNow(ctx context.Context) (Checkpoint, error) {
	var xmax uint64
	if err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&xmax); err != nil {
		return Checkpoint{}, fmt.Errorf("eventstore: log head: %w", err)
	}
	if err := s.WaitSettled(ctx, xmax); err != nil {
		return Checkpoint{}, err
	}
	return s.LogHead(ctx)
}
