package audit_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/projections"
)

// The scenario's shape: 17 events over three streams, every account compared with three read
// models.
const (
	scenarioEvents  = 17
	scenarioStreams = 3
)

func mismatches(rep *audit.Report) string {
	var b strings.Builder
	for _, m := range rep.Mismatches {
		fmt.Fprintf(&b, "\n  %s", m)
	}
	return b.String()
}

func TestVerifyCleanLog(t *testing.T) {
	l := newLedger(t, true)
	scenario(t, l)
	waitProjected(t)
	rep := verify(t, l)
	if !rep.OK() {
		t.Fatalf("a clean log has mismatches:%s", mismatches(rep))
	}
	if rep.Events != scenarioEvents || rep.Streams != scenarioStreams || rep.Accounts != 3 || rep.Comparisons != 9 || rep.Snapshots != 3 {
		t.Fatalf("report %+v: want %d events, %d streams, 3 accounts, 9 comparisons, 3 snapshots", rep, scenarioEvents, scenarioStreams)
	}
	var out strings.Builder
	if _, err := rep.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"replayed 17 events of 3 streams", "folded 3 accounts", "no mismatch", "events/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestVerifyWithLaggingProjectors: read models behind the log are compared at the versions
// they have applied, so lag is no mismatch; an account no projector has seen yet has nothing
// to compare.
func TestVerifyWithLaggingProjectors(t *testing.T) {
	l := newLedger(t, true)
	ids := scenario(t, l)
	waitProjected(t)
	l.stop()
	ctx := context.Background()
	if _, err := l.app.Buy(ctx, ids["alice"], "book"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.app.Transfer(ctx, ids["bob"], "alice", 5); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.app.OpenAccount(ctx, "dave", "hash"); err != nil {
		t.Fatal(err)
	}
	waitReadable(t, l)
	rep := verify(t, l)
	if !rep.OK() || rep.Events != scenarioEvents+5 || rep.Accounts != 4 || rep.Comparisons != 9 || rep.Snapshots != 4 {
		t.Fatalf("lagging read models: %+v%s", rep, mismatches(rep))
	}
	l.startProjectors(t)
	waitProjected(t)
	if rep := verify(t, l); !rep.OK() || rep.Comparisons != 12 {
		t.Fatalf("caught-up read models: %+v%s", rep, mismatches(rep))
	}
}

// TestVerifyNamesATamperedEvent: an event edited in place (with the append-only trigger off)
// breaks its hash link, and the verifier names exactly that event; the events after it still
// chain to its stored hash.
func TestVerifyNamesATamperedEvent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		account string
		version int64
		sql     string
		// foldOff are what shows an edit that also changes the account's fold: the read models and
		// the snapshot built from the events as they were.
		foldOff []string
	}{
		{"grant reason", "carol", 4, `UPDATE events SET payload_bytes = convert_to(replace(convert_from(payload_bytes, 'UTF8'), '"hackathon"', '"bribe"'), 'UTF8')`, nil},
		// One byte of the payload: the reason's first letter.
		{"payload byte", "carol", 4, `UPDATE events SET payload_bytes = overlay(payload_bytes PLACING 'H'::bytea FROM position('hackathon'::bytea IN payload_bytes))`, nil},
		{"metadata", "alice", 3, `UPDATE events SET metadata_bytes = convert_to(replace(convert_from(metadata_bytes, 'UTF8'), '"alice"', '"mallory"'), 'UTF8')`, nil},
		{"recorded time", "bob", 2, `UPDATE events SET recorded_at = recorded_at - interval '1 day'`, nil},
		{"purchase price", "alice", 3, `UPDATE events SET payload_bytes = convert_to(replace(convert_from(payload_bytes, 'UTF8'), '"price":20', '"price":2'), 'UTF8')`, []string{"balance_v1", "streams.snapshot"}},
		// A transfer received turned into a grant: the same coins, one transfer fewer.
		{"event type", "carol", 3, `UPDATE events SET event_type = 'CoinsGranted'`, []string{"history_v2", "streams.snapshot"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t, true)
			ids := scenario(t, l)
			waitProjected(t)
			stream := domain.StreamID(ids[tc.account])
			tamper(t, tc.sql+` WHERE stream_id = $1 AND stream_version = $2`, stream, tc.version)
			rep := verify(t, l)
			var events, others []audit.Mismatch
			for _, m := range rep.Mismatches {
				if m.StreamID != "" {
					events = append(events, m)
				} else {
					others = append(others, m)
				}
			}
			if len(events) != 1 || events[0].StreamID != stream || events[0].Version != tc.version {
				t.Fatalf("want exactly event %s version %d named, got:%s", stream, tc.version, mismatches(rep))
			}
			if !strings.Contains(events[0].String(), "hash mismatch") {
				t.Errorf("the problem is not named: %s", events[0])
			}
			var named []string
			for _, m := range others {
				if m.Username != tc.account {
					t.Errorf("another account named: %s", m)
				}
				named = append(named, m.ReadModel)
			}
			if slices.Sort(named); !slices.Equal(named, tc.foldOff) {
				t.Errorf("want %v of %s named besides the event, got:%s", tc.foldOff, tc.account, mismatches(rep))
			}
		})
	}
}

// TestVerifyChecksChainsOfHashRule1: a ledger written before events kept the bytes they hash
// (the audit scenario, as that code stored it: events and stream heads) verifies as it is, and
// an edit of one of its events is named, exactly that event.
func TestVerifyChecksChainsOfHashRule1(t *testing.T) {
	l := newLedger(t, false)
	sql, err := os.ReadFile("../../eventstore/testdata/hash_v1.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := db.Pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Conn().PgConn().Exec(context.Background(), string(sql)).ReadAll()
	conn.Release()
	if err != nil {
		t.Fatal(err)
	}
	waitReadable(t, l)
	rep := verify(t, l)
	if !rep.OK() || rep.Events != 21 || rep.Accounts != 3 || rep.Snapshots != 3 {
		t.Fatalf("rule 1 ledger: %d events, %d accounts, %d snapshots:%s", rep.Events, rep.Accounts, rep.Snapshots, mismatches(rep))
	}
	var stream string
	if err := db.Pool.QueryRow(context.Background(), `SELECT stream_id FROM events WHERE payload->>'reason' = 'hackathon'`).Scan(&stream); err != nil {
		t.Fatal(err)
	}
	tamper(t, `UPDATE events SET payload = jsonb_set(payload, '{reason}', '"bribe"') WHERE stream_id = $1 AND stream_version = 4`, stream)
	rep = verify(t, l)
	if len(rep.Mismatches) != 1 || rep.Mismatches[0].StreamID != stream || rep.Mismatches[0].Version != 4 ||
		!strings.Contains(rep.Mismatches[0].String(), "hash mismatch") {
		t.Fatalf("want exactly %s version 4 named, got:%s", stream, mismatches(rep))
	}
}

// TestVerifyNamesAHole: an event deleted from the middle of a stream shows at the next one, whose
// version does not follow and whose hash does not chain.
func TestVerifyNamesAHole(t *testing.T) {
	l := newLedger(t, true)
	ids := scenario(t, l)
	waitProjected(t)
	stream := domain.StreamID(ids["carol"])
	tamper(t, `DELETE FROM events WHERE stream_id = $1 AND stream_version = 5`, stream)
	rep := verify(t, l)
	if rep.OK() {
		t.Fatal("a hole went unnoticed")
	}
	for _, m := range rep.Mismatches {
		if m.StreamID != stream || m.Version != 6 {
			t.Errorf("want only %s version 6 named, got %s", stream, m)
		}
	}
	if !strings.Contains(mismatches(rep), "version 6 follows version 4") {
		t.Errorf("the hole is not described:%s", mismatches(rep))
	}
}

// TestVerifyChecksStreamHeads: the head rows that appends chain to and commands start from
// must agree with the log, so a deleted last event (which breaks no link) shows there, as does
// an edited snapshot or last hash.
func TestVerifyChecksStreamHeads(t *testing.T) {
	for _, tc := range []struct {
		name, account, sql string
		want               string // the first mismatch, as printed
		// others: how many more; the read models still hold a deleted event.
		others int
	}{
		{"deleted last event", "bob", `DELETE FROM events WHERE stream_id = $1 AND stream_version = 5`,
			"version 5: the stream's head row says it is the last of 5 events, the log holds 4", 3},
		{"edited last hash", "carol", `UPDATE streams SET last_hash = sha256(last_hash) WHERE stream_id = $1`,
			"version 7 (id", 0},
		{"edited snapshot", "alice", `UPDATE streams SET snapshot = jsonb_set(snapshot, '{balance}', '999999') WHERE stream_id = $1`,
			"streams.snapshot: at version 4: balance 999999, the log folds to 965", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLedger(t, true)
			ids := scenario(t, l)
			waitProjected(t)
			l.stop()
			tamper(t, tc.sql, domain.StreamID(ids[tc.account]))
			rep := verify(t, l)
			found := false
			for _, m := range rep.Mismatches {
				found = found || strings.Contains(m.String(), tc.want)
				if !strings.Contains(m.String(), ids[tc.account].String()) {
					t.Errorf("another account named: %s", m)
				}
			}
			if !found || len(rep.Mismatches) != 1+tc.others {
				t.Fatalf("want %q and %d more, got:%s", tc.want, tc.others, mismatches(rep))
			}
		})
	}
}

// TestVerifyNamesAnEditedReadModel: a read-model row edited by hand is named with its account
// and read model, and nothing else is.
func TestVerifyNamesAnEditedReadModel(t *testing.T) {
	l := newLedger(t, true)
	ids := scenario(t, l)
	waitProjected(t)
	l.stop() // nothing moves the read models but the edits below
	ghost := uuid.New()
	type want struct{ account, readModel string }
	for _, tc := range []struct {
		name       string
		edit, undo string
		args       []any
		want       []want
	}{
		{"balance coins", `UPDATE balance_v1 SET coins = coins + 1 WHERE account_id = $1`,
			`UPDATE balance_v1 SET coins = coins - 1 WHERE account_id = $1`, []any{ids["bob"]}, []want{{"bob", "balance_v1"}}},
		{"balance username", `UPDATE balance_v1 SET username = 'mallory' WHERE account_id = $1`,
			`UPDATE balance_v1 SET username = 'alice' WHERE account_id = $1`, []any{ids["alice"]}, []want{{"alice", "balance_v1"}}},
		{"inventory quantity", `UPDATE inventory_v1 SET quantity = 3 WHERE account_id = $1 AND item = 'pen'`,
			`UPDATE inventory_v1 SET quantity = 2 WHERE account_id = $1 AND item = 'pen'`, []any{ids["carol"]}, []want{{"carol", "inventory_v1"}}},
		{"inventory row removed", `DELETE FROM inventory_v1 WHERE account_id = $1 AND item = 'cup'`,
			`INSERT INTO inventory_v1 (account_id, item, quantity) VALUES ($1, 'cup', 1)`, []any{ids["alice"]}, []want{{"alice", "inventory_v1"}}},
		{"inventory row added", `INSERT INTO inventory_v1 (account_id, item, quantity) VALUES ($1, 'pen', 1)`,
			`DELETE FROM inventory_v1 WHERE account_id = $1 AND item = 'pen'`, []any{ids["bob"]}, []want{{"bob", "inventory_v1"}}},
		{"history amount", `UPDATE history_v2 SET amounts = array_replace(amounts, 7::bigint, 70::bigint) WHERE account_id = $1`,
			`UPDATE history_v2 SET amounts = array_replace(amounts, 70::bigint, 7::bigint) WHERE account_id = $1`, []any{ids["bob"]},
			[]want{{"bob", "history_v2"}}},
		{"history counterpart", `UPDATE history_v2 SET counterparts = array_replace(counterparts, 'bob', 'mallory') WHERE account_id = $1`,
			`UPDATE history_v2 SET counterparts = array_replace(counterparts, 'mallory', 'bob') WHERE account_id = $1`, []any{ids["alice"]},
			[]want{{"alice", "history_v2"}}},
		{"history side", `UPDATE history_v2 SET sent[1] = NOT sent[1] WHERE account_id = $1 AND page = 0`,
			`UPDATE history_v2 SET sent[1] = NOT sent[1] WHERE account_id = $1 AND page = 0`, []any{ids["alice"]},
			[]want{{"alice", "history_v2"}}},
		{"history version", `UPDATE history_v2 SET versions[1] = versions[1] + 100 WHERE account_id = $1 AND page = 0`,
			`UPDATE history_v2 SET versions[1] = versions[1] - 100 WHERE account_id = $1 AND page = 0`, []any{ids["carol"]},
			[]want{{"carol", "history_v2"}}},
		{"applied version ahead of the log", `UPDATE projection_heads SET version = version + 1 WHERE consumer_group = 'inventory_v1' AND account_id = $1`,
			`UPDATE projection_heads SET version = version - 1 WHERE consumer_group = 'inventory_v1' AND account_id = $1`, []any{ids["carol"]},
			[]want{{"carol", "inventory_v1"}}},
		{"an account without a stream", `INSERT INTO balance_v1 (account_id, username, coins) VALUES ($1, 'ghost', 5)`,
			`DELETE FROM balance_v1 WHERE account_id = $1`, []any{ghost}, []want{{"ghost", "balance_v1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exec(t, tc.edit, tc.args...)
			rep := verify(t, l)
			exec(t, tc.undo, tc.args...)
			var got []want
			for _, m := range rep.Mismatches {
				got = append(got, want{m.Username, m.ReadModel})
			}
			slices.SortFunc(got, func(a, b want) int { return strings.Compare(a.account, b.account) })
			if !slices.Equal(got, tc.want) {
				t.Fatalf("want %v named, got:%s", tc.want, mismatches(rep))
			}
			if rep := verify(t, l); !rep.OK() {
				t.Fatalf("still mismatched after the edit was undone:%s", mismatches(rep))
			}
		})
	}
}

// TestVerifyDuringTraffic: verifying while commands append and projectors apply them finds
// nothing, because each read model is compared at the version its snapshot says it applied.
func TestVerifyDuringTraffic(t *testing.T) {
	l := newLedger(t, true)
	ctx := context.Background()
	names := make([]string, 8)
	ids := make([]uuid.UUID, len(names))
	for i := range names {
		names[i] = fmt.Sprintf("trader%d", i)
		id, _, err := l.app.OpenAccount(ctx, names[i], "hash")
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	const workers, commands = 4, 60
	var done atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for range commands {
				from := r.IntN(len(ids))
				var err error
				if r.IntN(2) == 0 {
					_, err = l.app.Buy(ctx, ids[from], "pen")
				} else {
					_, err = l.app.Transfer(ctx, ids[from], names[(from+1+r.IntN(len(ids)-1))%len(ids)], domain.Coins(1+r.Int64N(20)))
				}
				if err != nil && !errors.Is(err, domain.ErrInsufficientFunds) && !errors.Is(err, app.ErrBusy) {
					errs <- err
					return
				}
			}
		})
	}
	go func() {
		wg.Wait()
		done.Store(true)
	}()
	runs := 0
	for !done.Load() || runs == 0 {
		rep, err := audit.Verify(ctx, l.store, audit.VerifyOptions{PageSize: 50, Workers: 2})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK() {
			t.Fatalf("verify during traffic (run %d):%s", runs+1, mismatches(rep))
		}
		runs++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitProjected(t)
	rep := verify(t, l)
	if !rep.OK() || rep.Comparisons != int64(3*len(ids)) || rep.Snapshots != int64(len(ids)) {
		t.Fatalf("after traffic: %+v%s", rep, mismatches(rep))
	}
	t.Logf("%d verifications during traffic; %d events in the end", runs, rep.Events)
}

// After a rebuild switches balance to version 2, verify compares the version that serves
// reads, and names an account whose balance_v2 row is wrong.
func TestVerifyComparesTheActiveVersion(t *testing.T) {
	l := newLedger(t, true)
	ids := scenario(t, l)
	waitProjected(t)
	l.stop()
	if _, err := projections.Rebuild(context.Background(), db.Pool, "balance", projections.RebuildOptions{Grace: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, l)
	if !rep.OK() || !slices.Contains(rep.ReadModels, "balance_v2") {
		t.Fatalf("after the rebuild: read models %v:%s", rep.ReadModels, mismatches(rep))
	}
	exec(t, `UPDATE balance_v2 SET coins = coins + 1 WHERE account_id = $1`, ids["bob"])
	rep = verify(t, l)
	if len(rep.Mismatches) != 1 || rep.Mismatches[0].Username != "bob" || rep.Mismatches[0].ReadModel != "balance_v2" {
		t.Fatalf("want bob named in balance_v2, got:%s", mismatches(rep))
	}
}

// A command that returned while an older transaction is still running cannot be read from the
// log until that transaction ends. A verification started meanwhile waits for it, then
// replays up to the command's events, and finds everything in order.
func TestVerifyWhileAnOlderTransactionIsStillRunning(t *testing.T) {
	l := newLedger(t, true)
	ctx := context.Background()
	ids := scenario(t, l)
	waitProjected(t)

	held, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var releaseOnce sync.Once
	releaseHeld := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseHeld) // never leave the server-wide fence held by a failed test
	go func() {
		grant := domain.CoinsGranted{Amount: 5, Reason: "held open"}
		_, err := l.store.Append(ctx, []eventstore.StreamAppend{{StreamID: domain.StreamID(ids["alice"]), Expected: eventstore.Any(),
			Events: []eventstore.EventData{{Type: grant.EventType(), SchemaVersion: domain.SchemaVersion, Payload: grant}}}},
			eventstore.InTransaction(func(context.Context, pgx.Tx) error { close(held); <-release; return nil }))
		done <- err
	}()
	<-held
	if _, err := l.app.Transfer(ctx, ids["bob"], "carol", 3); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, releaseHeld)
	rep := verify(t, l)
	if !rep.OK() {
		t.Fatalf("verify while an older transaction was running:%s", mismatches(rep))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rep.Events != scenarioEvents+3 {
		t.Errorf("replayed %d events, want the scenario's %d, the held grant and the transfer's two", rep.Events, scenarioEvents+3)
	}
}
