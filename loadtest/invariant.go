package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/projections"
)

// behindSQL counts the (account, consumer group) pairs whose read model has not applied the
// account's stream head yet.
const behindSQL = `SELECT count(*) FROM streams s CROSS JOIN unnest($1::text[]) AS g(name)
LEFT JOIN projection_heads h ON h.consumer_group = g.name AND h.account_id = substr(s.stream_id, $3)::uuid
WHERE s.stream_id LIKE $2 || '%' AND COALESCE(h.version, 0) < s.version`

// settle waits until every read model has applied every account's stream head, or within
// passes. It returns how many (account, group) pairs are still behind.
func settle(ctx context.Context, pool *pgxpool.Pool, groups []string, within time.Duration) (int64, error) {
	deadline := time.Now().Add(within)
	for {
		var behind int64
		if err := pool.QueryRow(ctx, behindSQL, groups, domain.StreamPrefix, len(domain.StreamPrefix)+1).Scan(&behind); err != nil {
			return 0, fmt.Errorf("read projection progress: %w", err)
		}
		if behind == 0 || time.Now().After(deadline) {
			return behind, nil
		}
		if !(realClock{}).Sleep(ctx, 200*time.Millisecond) {
			return behind, ctx.Err()
		}
	}
}

// invariantSQL computes, in one statement and so from one snapshot, the bank's totals from the
// event log and from the read models. Each account event moves its account's balance:
// CoinsGranted and CoinsReceived add their amount, CoinsSent subtracts it, ItemPurchased
// subtracts price × quantity (the price paid, recorded in the event). %[1]s and %[2]s are the
// balance and inventory tables serving reads.
const invariantSQL = `WITH ev AS (
    SELECT e.stream_id, e.stream_version, e.event_type,
           CASE e.event_type
               WHEN $1 THEN (e.doc->>'amount')::numeric
               WHEN $2 THEN (e.doc->>'amount')::numeric
               WHEN $3 THEN -(e.doc->>'amount')::numeric
               WHEN $4 THEN -((e.doc->>'price')::numeric * (e.doc->>'quantity')::numeric)
               ELSE 0
           END AS delta,
           CASE e.event_type WHEN $4 THEN (e.doc->>'quantity')::numeric ELSE 0 END AS items
    FROM (SELECT stream_id, stream_version, event_type,
                 COALESCE(payload, convert_from(payload_bytes, 'UTF8')::jsonb) AS doc
          FROM events) e WHERE e.stream_id LIKE $5 || '%%'
), running AS (
    SELECT sum(delta) OVER (PARTITION BY stream_id ORDER BY stream_version) AS balance FROM ev
), folded AS (
    SELECT stream_id, sum(delta) AS balance FROM ev GROUP BY stream_id
)
SELECT (SELECT count(*) FROM folded),
       (SELECT count(*) FROM ev),
       (SELECT COALESCE(sum(delta), 0)::bigint FROM ev WHERE event_type = $1),
       (SELECT COALESCE(-sum(delta), 0)::bigint FROM ev WHERE event_type = $4),
       (SELECT COALESCE(sum(items), 0)::bigint FROM ev),
       (SELECT COALESCE(-sum(delta), 0)::bigint FROM ev WHERE event_type = $3),
       (SELECT COALESCE(sum(delta), 0)::bigint FROM ev WHERE event_type = $2),
       (SELECT COALESCE(sum(balance), 0)::bigint FROM folded),
       (SELECT COALESCE(min(balance), 0)::bigint FROM running),
       (SELECT count(*) FROM %[1]s),
       (SELECT COALESCE(sum(coins), 0)::bigint FROM %[1]s),
       (SELECT COALESCE(min(coins), 0)::bigint FROM %[1]s),
       (SELECT count(*) FROM folded f FULL JOIN %[1]s b ON f.stream_id = $5 || b.account_id::text
        WHERE f.balance IS DISTINCT FROM b.coins),
       (SELECT COALESCE(sum(quantity), 0)::bigint FROM %[2]s)`

// readModels are the read models that serve reads: their consumer groups, and the balance and
// inventory tables the invariant reads.
type readModels struct {
	groups             []string
	balance, inventory string
}

// servingReadModels reads which version of each projection serves reads.
func servingReadModels(ctx context.Context, pool *pgxpool.Pool) (readModels, error) {
	versions, err := projections.ActiveVersions(ctx, pool)
	if err != nil {
		return readModels{}, err
	}
	b, i, h, err := versions.Served()
	if err != nil {
		return readModels{}, err
	}
	rm := readModels{groups: []string{b.Group(), i.Group(), h.Group()},
		balance: pgx.Identifier{b.Table()}.Sanitize(), inventory: pgx.Identifier{i.Table()}.Sanitize()}
	return rm, nil
}

// Invariant is the bank check at the end of a run.
type Invariant struct {
	Holds bool `json:"holds"`
	// From the event log.
	Accounts      int64 `json:"accounts"`
	Events        int64 `json:"events"`
	Granted       int64 `json:"granted"`
	Spent         int64 `json:"spent"`
	ItemsBought   int64 `json:"items_bought"`
	Sent          int64 `json:"sent"`
	Received      int64 `json:"received"`
	LogBalances   int64 `json:"log_balances"`
	LowestBalance int64 `json:"lowest_balance_ever"`
	// From the read models, once they have caught up.
	ReadModelsBehind  int64   `json:"read_models_behind"`
	BalanceRows       int64   `json:"balance_rows"`
	ReadModelBalances int64   `json:"read_model_balances"`
	LowestReadModel   int64   `json:"lowest_read_model_balance"`
	BalanceMismatches int64   `json:"balance_mismatches"`
	InventoryQuantity int64   `json:"inventory_quantity"`
	Checks            []Check `json:"checks"`
}

// Check is one named condition of the invariant.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// checkInvariant waits for the read models to catch up (up to within) and checks that coins
// are conserved and no balance ever went negative, in the log and in the read models.
func checkInvariant(ctx context.Context, pool *pgxpool.Pool, serving readModels, groups []string, within time.Duration) (*Invariant, error) {
	behind, err := settle(ctx, pool, groups, within)
	if err != nil {
		return nil, err
	}
	inv := &Invariant{ReadModelsBehind: behind}
	err = pool.QueryRow(ctx, fmt.Sprintf(invariantSQL, serving.balance, serving.inventory), domain.TypeCoinsGranted, domain.TypeCoinsReceived, domain.TypeCoinsSent,
		domain.TypeItemPurchased, domain.StreamPrefix).Scan(
		&inv.Accounts, &inv.Events, &inv.Granted, &inv.Spent, &inv.ItemsBought, &inv.Sent, &inv.Received,
		&inv.LogBalances, &inv.LowestBalance, &inv.BalanceRows, &inv.ReadModelBalances, &inv.LowestReadModel,
		&inv.BalanceMismatches, &inv.InventoryQuantity)
	if err != nil {
		return nil, fmt.Errorf("bank invariant query: %w", err)
	}
	inv.evaluate()
	return inv, nil
}

// evaluate fills Checks and Holds from the totals.
func (inv *Invariant) evaluate() {
	add := func(name string, ok bool, format string, args ...any) {
		inv.Checks = append(inv.Checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	add("transfers conserve coins", inv.Sent == inv.Received,
		"Σ sent %d, Σ received %d", inv.Sent, inv.Received)
	add("log: Σ balance + Σ spent = Σ granted", inv.LogBalances+inv.Spent == inv.Granted,
		"%d + %d = %d, granted %d", inv.LogBalances, inv.Spent, inv.LogBalances+inv.Spent, inv.Granted)
	add("log: no balance ever negative", inv.LowestBalance >= 0,
		"lowest balance after any event: %d", inv.LowestBalance)
	add("read models caught up", inv.ReadModelsBehind == 0,
		"%d (account, projection) pairs behind the stream head", inv.ReadModelsBehind)
	add("read models: Σ balance + Σ spent = Σ granted", inv.ReadModelBalances+inv.Spent == inv.Granted,
		"%d + %d = %d, granted %d", inv.ReadModelBalances, inv.Spent, inv.ReadModelBalances+inv.Spent, inv.Granted)
	add("read models: no negative balance", inv.LowestReadModel >= 0,
		"lowest balance: %d", inv.LowestReadModel)
	add("read models: every balance equals the log's", inv.BalanceMismatches == 0 && inv.BalanceRows == inv.Accounts,
		"%d of %d accounts differ; %d balance rows", inv.BalanceMismatches, inv.Accounts, inv.BalanceRows)
	add("read models: inventory equals items bought", inv.InventoryQuantity == inv.ItemsBought,
		"inventory %d, bought %d", inv.InventoryQuantity, inv.ItemsBought)
	inv.Holds = true
	for _, c := range inv.Checks {
		inv.Holds = inv.Holds && c.OK
	}
}
