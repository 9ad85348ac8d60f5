package audit

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/projections"
)

// readModel is what the read models hold of one account, read in one snapshot.
type readModel struct {
	// heads are the stream versions each projector has applied, by read model.
	heads      [len(modelNames{})]int64
	hasBalance bool
	username   string
	coins      int64
	items      map[string]int64
	hist       digest
	// seen: the replay met the account's stream.
	seen bool
}

// firstModel names the first read model that holds anything of the account.
func (rm *readModel) firstModel(names modelNames) string {
	switch {
	case rm.hasBalance:
		return names[balance]
	case len(rm.items) > 0:
		return names[inventory]
	case rm.hist.n > 0:
		return names[history]
	}
	return "projection_heads"
}

// streamHead is a stream's head row: its version, last hash and snapshot as the append path
// keeps them, for the next append to chain to and for commands to start from.
type streamHead struct {
	version         int64
	lastHash        []byte
	snapshot        []byte // JSON of the folded aggregate, or nil
	snapshotVersion int64
}

// snapshotOf is what the verifier reads before it replays the log, in one snapshot.
type snapshotOf struct {
	names      modelNames
	readModels map[uuid.UUID]*readModel
	heads      map[string]*streamHead
	// committedBelow is the snapshot's xmax: every transaction whose writes it sees has an id
	// below it.
	committedBelow uint64
}

// readSnapshot reads the stream head rows, the projectors' applied versions and every read
// model in one read-only REPEATABLE READ transaction, so that each read model agrees with its
// applied versions. The transaction never gets a transaction id, so it does not hold back the
// readers of the log however long it takes.
func readSnapshot(ctx context.Context, pool *pgxpool.Pool) (_ *snapshotOf, err error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("read models: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx)) // read-only: nothing to undo, the error says it all
		}
	}()
	var committedBelow int64
	if err := tx.QueryRow(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&committedBelow); err != nil {
		return nil, fmt.Errorf("read models: snapshot: %w", err)
	}
	heads := make(map[string]*streamHead)
	var (
		stream string
		h      streamHead
	)
	rows, _ := tx.Query(ctx, `SELECT stream_id, version, last_hash, snapshot, snapshot_version FROM streams`)
	if _, err := pgx.ForEachRow(rows, []any{&stream, &h.version, &h.lastHash, &h.snapshot, &h.snapshotVersion}, func() error {
		c := h
		heads[stream] = &c
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read streams: %w", err)
	}

	rms := make(map[uuid.UUID]*readModel)
	of := func(id uuid.UUID) *readModel {
		rm, ok := rms[id]
		if !ok {
			rm = &readModel{}
			rms[id] = rm
		}
		return rm
	}
	// The active version of each projection, read in the same snapshot as its rows.
	versions, err := projections.ActiveVersions(ctx, tx)
	if err != nil {
		return nil, err
	}
	var (
		names  modelNames
		served [len(modelNames{})]projections.Projection
	)
	if served[balance], served[inventory], served[history], err = versions.Served(); err != nil {
		return nil, err
	}
	for kind, p := range served {
		names[kind] = p.Group()
	}
	groupIndex := make(map[string]int, len(names))
	for g, name := range names {
		groupIndex[name] = g
	}

	var (
		id      uuid.UUID
		group   string
		version int64
	)
	rows, _ = tx.Query(ctx, `SELECT consumer_group, account_id, version FROM projection_heads
		WHERE consumer_group = ANY($1)`, names[:])
	if _, err := pgx.ForEachRow(rows, []any{&group, &id, &version}, func() error {
		of(id).heads[groupIndex[group]] = version
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read projection heads: %w", err)
	}
	if err := projections.ReadBalances(ctx, tx, served[balance], func(account uuid.UUID, username string, coins int64) {
		rm := of(account)
		rm.hasBalance, rm.username, rm.coins = true, username, coins
	}); err != nil {
		return nil, err
	}
	if err := projections.ReadInventories(ctx, tx, served[inventory], func(account uuid.UUID, item string, quantity int64) {
		rm := of(account)
		if rm.items == nil {
			rm.items = make(map[string]int64)
		}
		rm.items[item] = quantity
	}); err != nil {
		return nil, err
	}
	// Each party's half counts once its projector has applied it.
	if err := projections.ReadHistory(ctx, tx, served[history], func(account uuid.UUID, e projections.HistoryEntry) {
		of(account).hist.add(e.Sent, e.Version, e.Transfer, e.Counterpart, e.Amount, e.At)
	}); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("read models: commit: %w", err)
	}
	return &snapshotOf{names: names, readModels: rms, heads: heads, committedBelow: uint64(committedBelow)}, nil
}
