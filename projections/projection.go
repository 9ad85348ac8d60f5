// Package projections builds the read models that queries are served from (balances,
// inventories, coin history) out of the event log, asynchronously. Each projection version is
// a watermill consumer group fed by a watermill-sql subscriber reading the event store's own
// table in xid-fenced order. Every read-model write runs in the subscriber's poll transaction,
// inside a savepoint per event, behind a per-account version guard: the checkpoint moves with
// the data, a redelivered event is never applied twice, and a missing one stops the projection
// instead of being skipped.
package projections

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
)

// Envelope is an event as a projector sees it.
type Envelope struct {
	Position      int64
	TransactionID uint64
	AccountID     uuid.UUID
	Version       int64
	RecordedAt    time.Time
	Event         domain.Event
}

func decodeEnvelope(msg *message.Message) (Envelope, error) {
	md := msg.Metadata
	var env Envelope
	var err error
	stream := md.Get(mdStream)
	id, ok := strings.CutPrefix(stream, "account-")
	if !ok {
		return env, fmt.Errorf("stream %q is not an account stream", stream)
	}
	if env.AccountID, err = uuid.Parse(id); err != nil {
		return env, fmt.Errorf("stream %q: %w", stream, err)
	}
	if env.Version, err = strconv.ParseInt(md.Get(mdVersion), 10, 64); err != nil {
		return env, fmt.Errorf("version: %w", err)
	}
	if env.Position, err = strconv.ParseInt(md.Get(mdPosition), 10, 64); err != nil {
		return env, fmt.Errorf("position: %w", err)
	}
	if env.TransactionID, err = strconv.ParseUint(md.Get(mdTransactionID), 10, 64); err != nil {
		return env, fmt.Errorf("transaction id: %w", err)
	}
	if env.RecordedAt, err = time.Parse(time.RFC3339Nano, md.Get(mdRecordedAt)); err != nil {
		return env, fmt.Errorf("recorded at: %w", err)
	}
	schema, err := strconv.Atoi(md.Get(mdSchema))
	if err != nil {
		return env, fmt.Errorf("schema version: %w", err)
	}
	if env.Event, err = domain.DecodeEvent(md.Get(mdType), schema, msg.Payload); err != nil {
		return env, err
	}
	return env, nil
}

// Projection is one read model's definition at one schema version.
type Projection struct {
	// Name identifies the read model ("balance"); operators use it.
	Name string
	// Version is the read model's schema version; each version has its own tables and
	// consumer group, so a new one can be built beside the old.
	Version int
	// write returns the statement that applies one event, as the body of a CTE that may only
	// touch rows when the version guard passed (select FROM ok); "" means the event only
	// advances the guard. Its own parameters start at $4.
	write func(table string, e Envelope) (sql string, args []any)
	// table is the read model's main table at this version.
	table string
}

// Group is the projection version's consumer group, e.g. "balance_v1".
func (p Projection) Group() string { return p.Name + "_v" + strconv.Itoa(p.Version) }

// guardSQL advances projection_heads for ($1 group, $2 account) to version $3 only when $3 is
// the next version; the returned row says whether it did and what the version was before.
const guardSQL = `WITH prior AS (
    SELECT version FROM projection_heads WHERE consumer_group = $1 AND account_id = $2
), ins AS (
    INSERT INTO projection_heads (consumer_group, account_id, version)
    SELECT $1::text, $2::uuid, $3::bigint WHERE $3::bigint = 1
    ON CONFLICT DO NOTHING RETURNING 1
), upd AS (
    UPDATE projection_heads SET version = $3::bigint
    WHERE consumer_group = $1 AND account_id = $2 AND version = $3::bigint - 1 AND $3::bigint > 1
    RETURNING 1
), ok AS (
    SELECT 1 FROM ins UNION ALL SELECT 1 FROM upd
)`

const guardResult = `
SELECT EXISTS (SELECT 1 FROM ok), COALESCE((SELECT version FROM prior), 0)`

// statement returns the guarded statement applying e, and its arguments.
func (p Projection) statement(e Envelope) (string, []any) {
	args := []any{p.Group(), e.AccountID, e.Version}
	body, extra := p.write(p.table, e)
	if body == "" {
		return guardSQL + guardResult, args
	}
	return guardSQL + ", w AS (" + body + ")" + guardResult, append(args, extra...)
}

// Balance keeps each account's coins.
func Balance() Projection {
	return Projection{Name: "balance", Version: 1, table: "balance_v1", write: writeBalance}
}

func writeBalance(table string, e Envelope) (string, []any) {
	if ev, ok := e.Event.(domain.AccountOpened); ok {
		return `INSERT INTO ` + table + ` (account_id, username, coins) SELECT $2::uuid, $4::text, 0 FROM ok
		        ON CONFLICT (account_id) DO NOTHING`, []any{ev.Username}
	}
	delta := domain.BalanceChange(e.Event)
	if delta == 0 {
		return "", nil
	}
	return `UPDATE ` + table + ` AS b SET coins = b.coins + $4::bigint FROM ok WHERE b.account_id = $2::uuid`, []any{int64(delta)}
}

// Inventory keeps each account's count of every item bought.
func Inventory() Projection {
	return Projection{Name: "inventory", Version: 1, table: "inventory_v1", write: writeInventory}
}

func writeInventory(table string, e Envelope) (string, []any) {
	ev, ok := e.Event.(domain.ItemPurchased)
	if !ok {
		return "", nil
	}
	return `INSERT INTO ` + table + ` AS i (account_id, item, quantity) SELECT $2::uuid, $4::text, $5::bigint FROM ok
	        ON CONFLICT (account_id, item) DO UPDATE SET quantity = i.quantity + excluded.quantity`,
		[]any{ev.Item, ev.Quantity}
}

// History keeps one row per transfer, filled in from both halves.
func History() Projection {
	return Projection{Name: "history", Version: 1, table: "history_v1", write: writeHistory}
}

func writeHistory(table string, e Envelope) (string, []any) {
	var t domain.CoinsSent
	side := ""
	switch ev := e.Event.(type) {
	case domain.CoinsSent:
		t, side = ev, "from_version"
	case domain.CoinsReceived:
		t, side = domain.CoinsSent(ev), "to_version"
	default:
		return "", nil
	}
	return `INSERT INTO ` + table + ` AS h (transfer_id, from_id, from_username, to_id, to_username, amount, at, position, ` + side + `)
	        SELECT $4::uuid, $5::uuid, $6::text, $7::uuid, $8::text, $9::bigint, $10::timestamptz, $11::bigint, $3::bigint FROM ok
	        ON CONFLICT (transfer_id) DO UPDATE SET ` + side + ` = excluded.` + side,
		[]any{t.TransferID, t.From.ID, t.From.Username, t.To.ID, t.To.Username, int64(t.Amount), e.RecordedAt, e.Position}
}

// All returns the projections the ledger serves reads from.
func All() []Projection { return []Projection{Balance(), Inventory(), History()} }
