package projections

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/internal/lease"
)

// StatusPlan returns how the status statement runs when Statuses runs it (EXPLAIN ANALYZE, as
// JSON), with or without the transaction's planner settings, on a server that would compile
// any statement (jit_above_cost 0) where JIT is available.
func StatusPlan(ctx context.Context, pool *pgxpool.Pool, settings bool) (string, error) {
	var plan string
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT set_config('jit_above_cost', '0', true)`); err != nil {
			return err
		}
		if settings {
			if _, err := tx.Exec(ctx, statusScansSQL); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+statusSQL, rebuildLockClass, lease.Class).Scan(&plan)
	})
	return plan, err
}
