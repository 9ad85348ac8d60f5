package app_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
)

// logOrderBreaks returns, for at most limit streams, the events whose place in the log order
// that asynchronous readers walk, (transaction_id, global_position), does not follow their
// stream's version order, and the number of such events in all.
func logOrderBreaks(ctx context.Context, limit int) ([]string, int, error) {
	const q = `
WITH ordered AS (
    SELECT stream_id, stream_version, transaction_id, global_position,
           lag(stream_version) OVER (PARTITION BY stream_id ORDER BY transaction_id, global_position) AS prev
    FROM events
)
SELECT stream_id, stream_version, COALESCE(prev, 0), transaction_id::text, global_position, count(*) OVER ()
FROM ordered WHERE stream_version <> COALESCE(prev, 0) + 1
ORDER BY global_position LIMIT $1`
	rows, err := db.Pool.Query(ctx, q, limit)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	var total int
	var stream, tx string
	var v, prev, pos int64
	_, err = pgx.ForEachRow(rows, []any{&stream, &v, &prev, &tx, &pos, &total}, func() error {
		out = append(out, fmt.Sprintf("%s version %d (transaction %s, position %d) comes right after version %d in log order",
			stream, v, tx, pos, prev))
		return nil
	})
	return out, total, err
}

// logOrderDefect explains what a break of the log order does.
const logOrderDefect = `the global log order (transaction_id, global_position) that projectors read in must ` +
	`follow each stream's version order: projectors that meet version n+1 before n refuse it ("an ` +
	`event is missing"), mark the projection failed and stay stuck at that event across restarts. ` +
	`Out of order: `

// TestLogOrderFollowsStreamVersions builds the interleaving that once put a stream's versions
// out of log order: B appends to three streams N, T, S (all "any" version, like a transfer's
// recipient), takes N's lock and waits for T, held by C; A then locks S and appends to it; C and
// A commit, and B follows with the next version of S. When an append got its xid with its first
// stream lock, B's version of S carried a smaller xid than A's earlier one. Which stream B locks
// first is the store's business, so every assignment of the three roles is played; in those
// where B already holds S, A simply waits for B. Afterwards no stream's newer version may come
// first in the log order readers walk, and the projectors must apply every event.
func TestLogOrderFollowsStreamVersions(t *testing.T) {
	l := start(t, true, app.Config{})
	ctx := context.Background()
	_, ids := openAccounts(t, l.app, "order", 3, 1)
	streams := make([]string, 3)
	for i, id := range ids {
		streams[i] = domain.StreamID(id)
	}
	grant := func(reason string) []eventstore.EventData {
		return []eventstore.EventData{{Type: domain.TypeCoinsGranted, SchemaVersion: domain.SchemaVersion,
			Payload: domain.CoinsGranted{Amount: 1, Reason: reason}}}
	}
	// holding appends to stream with a hook that keeps its transaction (and stream lock) open
	// until release is closed.
	// Every held transaction is let go however the test ends: an open one would keep its
	// stream locks and block the next test's reset.
	holding := func(stream, reason string) (entered chan struct{}, release func(), done chan error) {
		entered, done = make(chan struct{}), make(chan error, 1)
		rel := make(chan struct{})
		var once sync.Once
		release = func() { once.Do(func() { close(rel) }) }
		t.Cleanup(release)
		go func() {
			_, err := l.store.Append(ctx, []eventstore.StreamAppend{{StreamID: stream, Expected: eventstore.Any(), Events: grant(reason)}},
				eventstore.InTransaction(func(context.Context, pgx.Tx) error { close(entered); <-rel; return nil }))
			done <- err
		}()
		return entered, release, done
	}
	// await waits for a holding append to be inside its transaction.
	await := func(entered chan struct{}, done chan error, who string) {
		select {
		case <-entered:
		case err := <-done:
			t.Fatalf("%s ended before holding its lock: %v", who, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("%s never got its lock", who)
		}
	}
	waitLockWait := func() string {
		deadline := time.Now().Add(30 * time.Second)
		for {
			var xid *string
			err := db.Pool.QueryRow(ctx, `SELECT backend_xid::text FROM pg_stat_activity
				WHERE datname = current_database() AND wait_event_type = 'Lock' LIMIT 1`).Scan(&xid)
			if err == nil {
				return deref2(xid)
			}
			if err != pgx.ErrNoRows {
				t.Fatal(err)
			}
			if time.Now().After(deadline) {
				dumpProjectionState(t)
				t.Fatal("the three-stream append never waited for a stream lock")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	finish := func(done chan error, who string) {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", who, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not finish", who)
		}
	}
	// play runs one interleaving and reports whether A got S while B was waiting.
	play := func(sN, sT, sS string) bool {
		cEntered, cRelease, cDone := holding(sT, "C holds T")
		await(cEntered, cDone, "C")
		bDone := make(chan error, 1)
		go func() {
			var appends []eventstore.StreamAppend
			for _, s := range []string{sS, sT, sN} {
				appends = append(appends, eventstore.StreamAppend{StreamID: s, Expected: eventstore.Any(), Events: grant("B")})
			}
			_, err := l.store.Append(ctx, appends)
			bDone <- err
		}()
		bXid := waitLockWait()
		aEntered, aRelease, aDone := holding(sS, "A holds S")
		interleaved := false
		select {
		case <-aEntered:
			interleaved = true
			var held string
			if err := db.Pool.QueryRow(ctx, `SELECT COALESCE(string_agg(backend_xid::text, ', ' ORDER BY backend_xid::text::bigint), '-')
				FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'`).Scan(&held); err != nil {
				t.Fatal(err)
			}
			t.Logf("B waits for a stream lock with xid %s; C and A hold T and S with xids %s", bXid, held)
		case err := <-aDone:
			t.Fatalf("A: %v", err)
		case <-time.After(2 * time.Second): // B holds S already: A comes after B
		}
		cRelease()
		finish(cDone, "C")
		aRelease()
		finish(aDone, "A")
		finish(bDone, "B")
		return interleaved
	}
	interleavings := 0
	for _, roles := range [][3]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}} {
		if play(streams[roles[0]], streams[roles[1]], streams[roles[2]]) {
			interleavings++
		}
	}
	if interleavings == 0 {
		t.Fatal("in no assignment of the roles did A get S while B waited: the test exercised nothing")
	}

	breaks, n, err := logOrderBreaks(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		for _, b := range breaks {
			t.Log(b)
		}
		logProjectionFailure(t, 10*time.Second)
		t.Fatal(logOrderDefect + strings.Join(breaks, "; "))
	}
	waitProjected(t, 20*time.Second)
	for _, id := range ids {
		f, err := foldStream(ctx, l.store, id)
		if err != nil {
			t.Fatal(err)
		}
		in, err := l.app.Info(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d := compareInfo(in, f); d != "" {
			t.Errorf("%s: %s", id, d)
		}
	}
}

// logProjectionFailure waits up to timeout for a projection to report itself failed and logs
// why; it is evidence for a bug report, not an assertion.
func logProjectionFailure(t *testing.T, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		rows, err := db.Pool.Query(ctx, `SELECT consumer_group, COALESCE(failed_position, 0), COALESCE(last_error, '')
			FROM projection_status WHERE state = 'failed' ORDER BY 1`)
		if err != nil {
			t.Log(err)
			return
		}
		var group, msg string
		var pos int64
		n := 0
		if _, err := pgx.ForEachRow(rows, []any{&group, &pos, &msg}, func() error {
			n++
			t.Logf("projection %s failed at position %d: %s", group, pos, msg)
			return nil
		}); err != nil {
			t.Log(err)
			return
		}
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("no projection reported failed within %v", timeout)
}
