// Package projections builds the read models that queries are served from (balances,
// inventories, coin history) out of the event log, asynchronously. Each projection version is a
// watermill Router handler fed by a watermill-sql subscriber that reads the event store's own
// table through its one fenced log reader (ADR 8): one message is one batch of events, applied
// by one set-based statement in the subscriber's poll transaction, behind a per-account version
// guard, and committed with the checkpoint. A redelivered event is never applied twice, and a
// missing one stops the projection instead of being skipped.
package projections

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// decoded is a recorded event with what its stream and payload decode to, as projectors and
// rebuilds fold it.
type decoded struct {
	*eventstore.RecordedEvent
	Account uuid.UUID
	Event   domain.Event
}

// decode decodes a recorded event of an account stream.
func decode(e *eventstore.RecordedEvent) (decoded, error) {
	d := decoded{RecordedEvent: e}
	id, ok := domain.AccountOf(e.StreamID)
	if !ok {
		return d, fmt.Errorf("event %s at %d: stream %q is not an account stream", e.ID, e.Position, e.StreamID)
	}
	ev, err := e.Decode()
	if err != nil {
		return d, fmt.Errorf("event %s at %d: %w", e.ID, e.Position, err)
	}
	d.Account, d.Event = id, ev
	return d, nil
}

// Projection is one read model's definition at one schema version.
type Projection struct {
	// Name identifies the read model ("balance"); operators use it.
	Name string
	// Version is the read model's schema version; each version has its own tables and
	// consumer group, so a new one can be built beside the old.
	Version int
	// table is the read model's main table at this version.
	table string
	// build returns a builder that folds the read model in memory, for rebuilds.
	build func() builder
	// record is the column list, after account_id and version, of the per-event records the
	// write reads; row returns an event's record, whose JSON names are those columns.
	record string
	row    func(e decoded) any
	// write holds the data-modifying CTEs that apply a batch: they read "applied", the batch's
	// records of the accounts whose version guard passed, and must apply the records of one
	// account in version order or, as here, as sums that do not depend on the order.
	write string
}

// Group is the projection version's consumer group, e.g. "balance_v1".
func (p Projection) Group() string { return p.Name + "_v" + strconv.Itoa(p.Version) }

// key is the part of every record the version guard reads.
type key struct {
	Account uuid.UUID `json:"account_id"`
	Version int64     `json:"version"`
}

func keyOf(e decoded) key { return key{Account: e.Account, Version: e.Version} }

// guardSQL applies a batch of events ($2, a JSON array of records; $3, its accounts) for the
// consumer group $1.
// Per account it keeps the events after the version projection_heads holds ("fresh"; older
// ones are redeliveries), and advances the head only when they are exactly the next versions
// with no hole. The write sees the fresh records of those accounts as "applied"; an account
// whose events do not follow on its head makes the statement raise (projection_refuse_gaps,
// SQLSTATE LDG01, the accounts as DETAIL), which undoes the whole batch and whatever was
// queued behind it in the same round trip: a gap is an error, never a skip. It returns how
// many records were redeliveries and how many were applied.
const guardSQL = `WITH ev AS (
    SELECT * FROM jsonb_to_recordset($2::jsonb) AS r(account_id uuid, version bigint, %s)
), prior AS (
    SELECT h.account_id, h.version FROM projection_heads h
    WHERE h.consumer_group = $1 AND h.account_id = ANY ($3::uuid[])
), fresh AS (
    SELECT ev.* FROM ev LEFT JOIN prior p USING (account_id) WHERE ev.version > COALESCE(p.version, 0)
), span AS (
    SELECT f.account_id, min(f.version) AS first, max(f.version) AS last, count(*) AS n,
           COALESCE(max(p.version), 0) AS prior
    FROM fresh f LEFT JOIN prior p USING (account_id) GROUP BY f.account_id
), next AS (
    SELECT * FROM span WHERE first = prior + 1 AND last - first + 1 = n
), ins AS (
    INSERT INTO projection_heads (consumer_group, account_id, version)
    SELECT $1, account_id, last FROM next WHERE prior = 0
    ON CONFLICT DO NOTHING RETURNING account_id
), upd AS (
    UPDATE projection_heads h SET version = n.last FROM next n
    WHERE h.consumer_group = $1 AND h.account_id = n.account_id AND n.prior > 0 AND h.version = n.prior
    RETURNING h.account_id
), ok AS (
    SELECT account_id FROM ins UNION ALL SELECT account_id FROM upd
), applied AS (
    SELECT fresh.* FROM fresh JOIN ok USING (account_id)
), %s
SELECT (SELECT count(*) FROM ev) - (SELECT count(*) FROM fresh),
       (SELECT count(*) FROM applied),
       projection_refuse_gaps((
           SELECT json_agg(json_build_object('account', s.account_id, 'first', s.first, 'last', s.last, 'prior', s.prior))
           FROM span s WHERE s.account_id NOT IN (SELECT account_id FROM ok)))`

// batchSQL is the projection's statement applying a batch of events.
func (p Projection) batchSQL() string { return fmt.Sprintf(guardSQL, p.record, p.write) }

// args returns batchSQL's arguments for a batch: the records as a JSON array, and the
// batch's accounts.
func (p Projection) args(events []decoded) ([]any, error) {
	rows := make([]any, len(events))
	accounts := make([]uuid.UUID, 0, len(events))
	seen := make(map[uuid.UUID]struct{}, len(events))
	for i, e := range events {
		rows[i] = p.row(e)
		if _, ok := seen[e.Account]; !ok {
			seen[e.Account] = struct{}{}
			accounts = append(accounts, e.Account)
		}
	}
	records, err := json.Marshal(rows)
	if err != nil {
		return nil, fmt.Errorf("encode records: %w", err)
	}
	return []any{p.Group(), records, accounts}, nil
}

// Balance keeps each account's coins.
func Balance() Projection {
	return Projection{Name: "balance", Version: 1, table: "balance_v1", build: newBalanceBuilder("balance_v1", false), record: "delta bigint, username text", row: balanceRow,
		// An account opened in this batch is inserted with the sum of its batch; the others
		// are updated by theirs. (One statement cannot insert a row and then update it.)
		write: `opened AS (
    INSERT INTO balance_v1 (account_id, username, coins)
    SELECT account_id, max(username), sum(delta) FROM applied GROUP BY account_id HAVING count(username) > 0
    ON CONFLICT (account_id) DO NOTHING
), moved AS (
    UPDATE balance_v1 b SET coins = b.coins + d.delta
    FROM (SELECT account_id, sum(delta) AS delta FROM applied GROUP BY account_id
          HAVING count(username) = 0 AND sum(delta) <> 0) d
    WHERE b.account_id = d.account_id
)`}
}

type balanceRecord struct {
	key
	Delta    int64  `json:"delta"`
	Username string `json:"username,omitempty"`
}

func balanceRow(e decoded) any {
	r := balanceRecord{key: keyOf(e), Delta: int64(domain.BalanceChange(e.Event))}
	if ev, ok := e.Event.(domain.AccountOpened); ok {
		r.Username = ev.Username
	}
	return r
}

// Inventory keeps each account's count of every item bought.
func Inventory() Projection {
	return Projection{Name: "inventory", Version: 1, table: "inventory_v1", build: newInventoryBuilder, record: "item text, quantity bigint", row: inventoryRow,
		write: `bought AS (
    INSERT INTO inventory_v1 AS i (account_id, item, quantity)
    SELECT account_id, item, sum(quantity) FROM applied WHERE item IS NOT NULL GROUP BY account_id, item
    ON CONFLICT (account_id, item) DO UPDATE SET quantity = i.quantity + excluded.quantity
)`}
}

type inventoryRecord struct {
	key
	Item     string `json:"item,omitempty"`
	Quantity int64  `json:"quantity,omitempty"`
}

func inventoryRow(e decoded) any {
	r := inventoryRecord{key: keyOf(e)}
	if ev, ok := e.Event.(domain.ItemPurchased); ok {
		r.Item, r.Quantity = ev.Item, ev.Quantity
	}
	return r
}

// History keeps one row per transfer, filled in from both halves: each party's stream version
// is set when its half is applied.
func History() Projection {
	return Projection{Name: "history", Version: 1, table: "history_v1", build: newHistoryBuilder, row: historyRow,
		record: `side text, transfer_id uuid, from_id uuid, from_username text, to_id uuid, to_username text,
                 amount bigint, at timestamptz, position bigint`,
		write: `moved AS (
    INSERT INTO history_v1 AS h (transfer_id, from_id, from_username, to_id, to_username, amount, at, position, from_version, to_version)
    SELECT transfer_id, (array_agg(from_id))[1], (array_agg(from_username))[1], (array_agg(to_id))[1],
           (array_agg(to_username))[1], max(amount), min(at), min(position),
           max(version) FILTER (WHERE side = 'from'), max(version) FILTER (WHERE side = 'to')
    FROM applied WHERE side IS NOT NULL GROUP BY transfer_id
    ON CONFLICT (transfer_id) DO UPDATE SET
        from_version = COALESCE(h.from_version, excluded.from_version),
        to_version = COALESCE(h.to_version, excluded.to_version)
)`}
}

type historyRecord struct {
	key
	Side string `json:"side,omitempty"`
	*transferRecord
}

type transferRecord struct {
	TransferID   uuid.UUID `json:"transfer_id"`
	FromID       uuid.UUID `json:"from_id"`
	FromUsername string    `json:"from_username"`
	ToID         uuid.UUID `json:"to_id"`
	ToUsername   string    `json:"to_username"`
	Amount       int64     `json:"amount"`
	At           time.Time `json:"at"`
	Position     int64     `json:"position"`
}

func historyRow(e decoded) any {
	r := historyRecord{key: keyOf(e)}
	var t domain.CoinsSent
	switch ev := e.Event.(type) {
	case domain.CoinsSent:
		t, r.Side = ev, "from"
	case domain.CoinsReceived:
		t, r.Side = domain.CoinsSent(ev), "to"
	default:
		return r
	}
	r.transferRecord = &transferRecord{TransferID: t.TransferID, FromID: t.From.ID, FromUsername: t.From.Username,
		ToID: t.To.ID, ToUsername: t.To.Username, Amount: int64(t.Amount), At: e.RecordedAt, Position: e.Position}
	return r
}

// historyPageSize is how many entries a page of history_v2 holds (its CHECK says the same).
const historyPageSize = 16

// HistoryV2 keeps each account's own coin history, in its stream's order, as pages of parallel
// arrays (migration 009): a read is one index range of a few rows, however long history grows.
// Each half of a transfer is its own account's entry, applied with its own stream version, so
// an account's history never shows the other party's half early or late.
func HistoryV2() Projection {
	return Projection{Name: "history", Version: 2, table: "history_v2", build: newHistoryV2Builder, row: historyV2Row,
		record: "sent boolean, counterpart text, amount bigint, transfer_id uuid, at timestamptz",
		// Entries are numbered after the account's last page and grouped by the page they
		// fall in: the last page is appended to, the pages after it inserted.
		write: fmt.Sprintf(`entries AS (
    SELECT account_id, version, sent, counterpart, amount, transfer_id, at,
           row_number() OVER (PARTITION BY account_id ORDER BY version) - 1 AS k
    FROM applied WHERE sent IS NOT NULL
), tail AS (
    SELECT a.account_id, COALESCE(t.page * %[1]d + cardinality(t.versions), 0) AS n
    FROM (SELECT DISTINCT account_id FROM entries) a
    LEFT JOIN LATERAL (SELECT page, versions FROM history_v2 h WHERE h.account_id = a.account_id
                       ORDER BY page DESC LIMIT 1) t ON true
), pages AS (
    SELECT e.account_id, ((t.n + e.k) / %[1]d)::integer AS page,
           array_agg(e.version ORDER BY e.version) AS versions, array_agg(e.sent ORDER BY e.version) AS sent,
           array_agg(e.counterpart ORDER BY e.version) AS counterparts, array_agg(e.amount ORDER BY e.version) AS amounts,
           array_agg(e.transfer_id ORDER BY e.version) AS transfer_ids, array_agg(e.at ORDER BY e.version) AS ats
    FROM entries e JOIN tail t USING (account_id)
    GROUP BY e.account_id, (t.n + e.k) / %[1]d
), appended AS (
    INSERT INTO history_v2 AS h (account_id, page, versions, sent, counterparts, amounts, transfer_ids, ats)
    SELECT * FROM pages
    ON CONFLICT (account_id, page) DO UPDATE SET
        versions = h.versions || excluded.versions, sent = h.sent || excluded.sent,
        counterparts = h.counterparts || excluded.counterparts, amounts = h.amounts || excluded.amounts,
        transfer_ids = h.transfer_ids || excluded.transfer_ids, ats = h.ats || excluded.ats
)`, historyPageSize)}
}

type historyV2Record struct {
	key
	Sent        *bool     `json:"sent,omitempty"`
	Counterpart string    `json:"counterpart,omitempty"`
	Amount      int64     `json:"amount,omitempty"`
	TransferID  uuid.UUID `json:"transfer_id,omitzero"`
	At          time.Time `json:"at,omitzero"`
}

func historyV2Row(e decoded) any {
	r := historyV2Record{key: keyOf(e)}
	if en, ok := historyEntryOf(e); ok {
		r.Sent, r.Counterpart, r.Amount, r.TransferID, r.At = &en.Sent, en.Counterpart, en.Amount, en.Transfer, en.At
	}
	return r
}

// HistoryEntry is one transfer as one of its parties' coin history holds it.
type HistoryEntry struct {
	// Version is the party's stream version of its half of the transfer.
	Version     int64
	Sent        bool
	Counterpart string
	Amount      int64
	Transfer    uuid.UUID
	At          time.Time
}

// historyEntryOf returns the entry an event adds to its account's coin history, if any.
func historyEntryOf(e decoded) (HistoryEntry, bool) {
	en := HistoryEntry{Version: e.Version, At: e.RecordedAt}
	switch ev := e.Event.(type) {
	case domain.CoinsSent:
		en.Sent, en.Counterpart, en.Amount, en.Transfer = true, ev.To.Username, int64(ev.Amount), ev.TransferID
	case domain.CoinsReceived:
		en.Counterpart, en.Amount, en.Transfer = ev.From.Username, int64(ev.Amount), ev.TransferID
	default:
		return en, false
	}
	return en, true
}

// BalanceV2 keeps each account's coins and its totals received, sent and spent: the schema
// change that version 2 ships, built from history by a rebuild.
func BalanceV2() Projection {
	return Projection{Name: "balance", Version: 2, table: "balance_v2", build: newBalanceBuilder("balance_v2", true), row: balanceV2Row,
		record: "delta bigint, username text, received bigint, sent bigint, spent bigint",
		write: `opened AS (
    INSERT INTO balance_v2 (account_id, username, coins, received, sent, spent)
    SELECT account_id, max(username), sum(delta), sum(received), sum(sent), sum(spent)
    FROM applied GROUP BY account_id HAVING count(username) > 0
    ON CONFLICT (account_id) DO NOTHING
), moved AS (
    UPDATE balance_v2 b SET coins = b.coins + d.delta, received = b.received + d.received,
                            sent = b.sent + d.sent, spent = b.spent + d.spent
    FROM (SELECT account_id, sum(delta) AS delta, sum(received) AS received, sum(sent) AS sent, sum(spent) AS spent
          FROM applied GROUP BY account_id
          HAVING count(username) = 0 AND (sum(delta) <> 0 OR sum(received) <> 0 OR sum(sent) <> 0 OR sum(spent) <> 0)) d
    WHERE b.account_id = d.account_id
)`}
}

type balanceV2Record struct {
	balanceRecord
	Received int64 `json:"received"`
	Sent     int64 `json:"sent"`
	Spent    int64 `json:"spent"`
}

func balanceV2Row(e decoded) any {
	r := balanceV2Record{balanceRecord: balanceRow(e).(balanceRecord)}
	switch ev := e.Event.(type) {
	case domain.CoinsReceived:
		r.Received = int64(ev.Amount)
	case domain.CoinsSent:
		r.Sent = int64(ev.Amount)
	case domain.ItemPurchased:
		r.Spent = -r.Delta
	}
	return r
}

// All returns the version of each projection a fresh database serves reads from (migrations 003
// and 009), and what a runner that does not follow projection_versions runs.
func All() []Projection { return []Projection{Balance(), Inventory(), HistoryV2()} }

// Versions returns every version of every projection the code knows, oldest first.
func Versions() []Projection {
	return []Projection{Balance(), BalanceV2(), Inventory(), History(), HistoryV2()}
}

// Latest returns the newest version of the named projection.
func Latest(name string) (Projection, bool) {
	var latest Projection
	found := false
	for _, p := range Versions() {
		if p.Name == name && (!found || p.Version > latest.Version) {
			latest, found = p, true
		}
	}
	return latest, found
}

// Lookup returns the named projection at version.
func Lookup(name string, version int) (Projection, bool) {
	for _, p := range Versions() {
		if p.Name == name && p.Version == version {
			return p, true
		}
	}
	return Projection{}, false
}

// Table is the read model's main table at this version.
func (p Projection) Table() string { return p.table }
