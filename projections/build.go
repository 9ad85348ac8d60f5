package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
)

// builder folds one projection version's read model in memory from the log, for a rebuild,
// and writes it out with COPY. Events arrive in log order, so each account's in version order.
type builder interface {
	add(e decoded)
	copyOut(ctx context.Context, tx pgx.Tx) (rows int64, err error)
}

type balanceState struct {
	username                     string
	coins, received, sent, spent int64
}

// balanceBuilder builds balance_v1 (coins) or, with totals, balance_v2.
type balanceBuilder struct {
	table    string
	totals   bool
	accounts map[uuid.UUID]*balanceState
}

func newBalanceBuilder(table string, totals bool) func() builder {
	return func() builder {
		return &balanceBuilder{table: table, totals: totals, accounts: make(map[uuid.UUID]*balanceState)}
	}
}

func (b *balanceBuilder) add(e decoded) {
	st := b.accounts[e.Account]
	if st == nil {
		st = &balanceState{}
		b.accounts[e.Account] = st
	}
	delta := int64(domain.BalanceChange(e.Event))
	st.coins += delta
	switch ev := e.Event.(type) {
	case domain.AccountOpened:
		st.username = ev.Username
	case domain.CoinsReceived:
		st.received += int64(ev.Amount)
	case domain.CoinsSent:
		st.sent += int64(ev.Amount)
	case domain.ItemPurchased:
		st.spent -= delta // what the purchase took, by the one balance rule
	}
}

func (b *balanceBuilder) copyOut(ctx context.Context, tx pgx.Tx) (int64, error) {
	cols := []string{"account_id", "username", "coins"}
	if b.totals {
		cols = append(cols, "received", "sent", "spent")
	}
	rows := make([][]any, 0, len(b.accounts))
	for id, st := range b.accounts {
		row := []any{id, st.username, st.coins}
		if b.totals {
			row = append(row, st.received, st.sent, st.spent)
		}
		rows = append(rows, row)
	}
	return tx.CopyFrom(ctx, pgx.Identifier{b.table}, cols, pgx.CopyFromRows(rows))
}

type holding struct {
	account uuid.UUID
	item    string
}

type inventoryBuilder struct{ quantities map[holding]int64 }

func newInventoryBuilder() builder { return &inventoryBuilder{quantities: make(map[holding]int64)} }

func (b *inventoryBuilder) add(e decoded) {
	if ev, ok := e.Event.(domain.ItemPurchased); ok {
		b.quantities[holding{e.Account, ev.Item}] += ev.Quantity
	}
}

func (b *inventoryBuilder) copyOut(ctx context.Context, tx pgx.Tx) (int64, error) {
	rows := make([][]any, 0, len(b.quantities))
	for h, q := range b.quantities {
		rows = append(rows, []any{h.account, h.item, q})
	}
	return tx.CopyFrom(ctx, pgx.Identifier{"inventory_v1"}, []string{"account_id", "item", "quantity"}, pgx.CopyFromRows(rows))
}

type transferRow struct {
	t                      domain.CoinsSent
	fromVersion, toVersion *int64
	at                     time.Time
	position               int64
}

type historyBuilder struct{ transfers map[uuid.UUID]*transferRow }

func newHistoryBuilder() builder { return &historyBuilder{transfers: make(map[uuid.UUID]*transferRow)} }

func (b *historyBuilder) add(e decoded) {
	var t domain.CoinsSent
	from := false
	switch ev := e.Event.(type) {
	case domain.CoinsSent:
		t, from = ev, true
	case domain.CoinsReceived:
		t = domain.CoinsSent(ev)
	default:
		return
	}
	row := b.transfers[t.TransferID]
	if row == nil {
		// The first half in log order names the row's time and place, as the live projector does.
		row = &transferRow{t: t, at: e.RecordedAt, position: e.Position}
		b.transfers[t.TransferID] = row
	}
	v := e.Version
	if from {
		row.fromVersion = &v
	} else {
		row.toVersion = &v
	}
}

func (b *historyBuilder) copyOut(ctx context.Context, tx pgx.Tx) (int64, error) {
	rows := make([][]any, 0, len(b.transfers))
	for id, r := range b.transfers {
		rows = append(rows, []any{id, r.t.From.ID, r.t.From.Username, r.fromVersion, r.t.To.ID, r.t.To.Username,
			r.toVersion, int64(r.t.Amount), r.at, r.position})
	}
	return tx.CopyFrom(ctx, pgx.Identifier{"history_v1"}, []string{"transfer_id", "from_id", "from_username", "from_version",
		"to_id", "to_username", "to_version", "amount", "at", "position"}, pgx.CopyFromRows(rows))
}

// historyV2Builder builds history_v2: each account's entries, in version order, in pages.
type historyV2Builder map[uuid.UUID][]HistoryEntry

func newHistoryV2Builder() builder { return historyV2Builder{} }

func (b historyV2Builder) add(e decoded) {
	if en, ok := historyEntryOf(e); ok {
		b[e.Account] = append(b[e.Account], en)
	}
}

func (b historyV2Builder) copyOut(ctx context.Context, tx pgx.Tx) (int64, error) {
	var rows [][]any
	for id, entries := range b {
		for page := 0; page*historyPageSize < len(entries); page++ {
			chunk := entries[page*historyPageSize : min((page+1)*historyPageSize, len(entries))]
			versions, sent, counterparts := make([]int64, len(chunk)), make([]bool, len(chunk)), make([]string, len(chunk))
			amounts, transfers, ats := make([]int64, len(chunk)), make([]uuid.UUID, len(chunk)), make([]time.Time, len(chunk))
			for i, en := range chunk {
				versions[i], sent[i], counterparts[i] = en.Version, en.Sent, en.Counterpart
				amounts[i], transfers[i], ats[i] = en.Amount, en.Transfer, en.At
			}
			rows = append(rows, []any{id, page, versions, sent, counterparts, amounts, transfers, ats})
		}
	}
	return tx.CopyFrom(ctx, pgx.Identifier{"history_v2"}, []string{"account_id", "page", "versions", "sent",
		"counterparts", "amounts", "transfer_ids", "ats"}, pgx.CopyFromRows(rows))
}

// headsBuilder tracks each account's last version folded, refusing a gap, for projection_heads.
type headsBuilder map[uuid.UUID]int64

func (h headsBuilder) add(e decoded) error {
	if prior := h[e.Account]; e.Version != prior+1 {
		return fmt.Errorf("account %s: event version %d follows version %d in the log: an event is missing",
			e.Account, e.Version, prior)
	}
	h[e.Account] = e.Version
	return nil
}

func (h headsBuilder) copyOut(ctx context.Context, tx pgx.Tx, group string) (int64, error) {
	rows := make([][]any, 0, len(h))
	for id, v := range h {
		rows = append(rows, []any{group, id, v})
	}
	return tx.CopyFrom(ctx, pgx.Identifier{"projection_heads"}, []string{"consumer_group", "account_id", "version"}, pgx.CopyFromRows(rows))
}
