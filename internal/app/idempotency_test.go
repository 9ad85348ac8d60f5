package app_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/notify"
)

// keyedEvents counts the events recorded under an idempotency key, by type.
func keyedEvents(t *testing.T, key string) map[string]int {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(),
		`SELECT event_type, count(*) FROM events WHERE convert_from(metadata_bytes, 'UTF8')::jsonb->>'idempotencyKey' = $1 GROUP BY event_type`, key)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		if err := rows.Scan(&typ, &n); err != nil {
			t.Fatal(err)
		}
		out[typ] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func streamHead(t *testing.T, l *ledger, id uuid.UUID) int64 {
	t.Helper()
	v, err := headOf(context.Background(), l.store, domain.StreamID(id))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func openNamed(t *testing.T, l *ledger, names ...string) []uuid.UUID {
	t.Helper()
	ids := make([]uuid.UUID, len(names))
	for i, n := range names {
		id, _, err := l.app.OpenAccount(context.Background(), n, "hash")
		if err != nil {
			t.Fatalf("open %s: %v", n, err)
		}
		ids[i] = id
	}
	return ids
}

func coins(t *testing.T, l *ledger, id uuid.UUID) int64 {
	t.Helper()
	in, err := l.app.Info(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return in.Coins
}

// TestIdempotentCommandsRunOnce: each command sent twice under one key runs once, and the
// second call returns the first one's result.
func TestIdempotentCommandsRunOnce(t *testing.T) {
	l := start(t, true, app.Config{})
	ids := openNamed(t, l, "alice", "bob")
	alice, bob := ids[0], ids[1]

	for _, tc := range []struct {
		name, caller, key string
		run               func(ctx context.Context) (app.Result, error)
		want              map[string]int
	}{
		{"buy", "alice", "buy-1",
			func(ctx context.Context) (app.Result, error) { return l.app.Buy(ctx, alice, "cup") },
			map[string]int{domain.TypeItemPurchased: 1}},
		{"transfer", "alice", "send-1",
			func(ctx context.Context) (app.Result, error) { return l.app.Transfer(ctx, alice, "bob", 25) },
			map[string]int{domain.TypeCoinsSent: 1, domain.TypeCoinsReceived: 1}},
		{"grant", "root", "grant-1",
			func(ctx context.Context) (app.Result, error) { return l.app.Grant(ctx, "root", "bob", 70, "bonus") },
			map[string]int{domain.TypeCoinsGranted: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := app.WithIdempotencyKey(context.Background(), tc.caller, tc.key)
			first, err := tc.run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			heads := []int64{streamHead(t, l, alice), streamHead(t, l, bob)}
			again, err := tc.run(ctx)
			if err != nil {
				t.Fatalf("same key, same request: %v", err)
			}
			if !reflect.DeepEqual(first, again) {
				t.Errorf("replayed result differs:\nfirst %+v\nagain %+v", first, again)
			}
			if got := []int64{streamHead(t, l, alice), streamHead(t, l, bob)}; !reflect.DeepEqual(got, heads) {
				t.Errorf("stream heads moved on the replay: %v, then %v", heads, got)
			}
			if got := keyedEvents(t, tc.key); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("events under key %q: %v, want %v", tc.key, got, tc.want)
			}
		})
	}
	if got, want := coins(t, l, alice), int64(1000-20-25); got != want {
		t.Errorf("alice has %d coins, want %d", got, want)
	}
	if got, want := coins(t, l, bob), int64(1000+25+70); got != want {
		t.Errorf("bob has %d coins, want %d", got, want)
	}
}

// TestIdempotencyKeyOtherRequest: a key names one request of its caller; another request under
// it is refused without running, whatever command it is, and other callers' keys are their own.
func TestIdempotencyKeyOtherRequest(t *testing.T) {
	l := start(t, false, app.Config{})
	ids := openNamed(t, l, "alice", "bob", "carol")
	alice, bob := ids[0], ids[1]
	ctx := app.WithIdempotencyKey(context.Background(), "alice", "k1")
	if _, err := l.app.Transfer(ctx, alice, "bob", 10); err != nil {
		t.Fatal(err)
	}
	head := streamHead(t, l, alice)
	for name, run := range map[string]func() error{
		"other amount":    func() error { _, err := l.app.Transfer(ctx, alice, "bob", 11); return err },
		"other recipient": func() error { _, err := l.app.Transfer(ctx, alice, "carol", 10); return err },
		"other command":   func() error { _, err := l.app.Buy(ctx, alice, "cup"); return err },
	} {
		err := run()
		if !errors.Is(err, app.ErrIdempotencyKeyReused) {
			t.Errorf("%s: got %v, want ErrIdempotencyKeyReused", name, err)
			continue
		}
		if !strings.Contains(err.Error(), `"k1"`) || !strings.Contains(err.Error(), "sendCoin") {
			t.Errorf("%s: message does not name the key and its first use: %v", name, err)
		}
	}
	if got := streamHead(t, l, alice); got != head {
		t.Errorf("a refused reuse wrote events: head %d, then %d", head, got)
	}
	// Bob's k1 is not Alice's.
	if _, err := l.app.Transfer(app.WithIdempotencyKey(context.Background(), "bob", "k1"), bob, "alice", 10); err != nil {
		t.Fatalf("bob's k1: %v", err)
	}
}

// TestIdempotentRefusalReplayed: a refusal is recorded and given again for the same key, even
// after the account could afford the request; it is not decided again.
func TestIdempotentRefusalReplayed(t *testing.T) {
	l := start(t, false, app.Config{})
	ids := openNamed(t, l, "alice", "bob")
	alice := ids[0]
	ctx := app.WithIdempotencyKey(context.Background(), "alice", "big-send")
	_, first := l.app.Transfer(ctx, alice, "bob", 2000)
	if !errors.Is(first, domain.ErrInsufficientFunds) {
		t.Fatalf("first: %v, want not enough coin", first)
	}
	if _, err := l.app.Grant(context.Background(), "root", "alice", 5000, "now she can"); err != nil {
		t.Fatal(err)
	}
	head := streamHead(t, l, alice)
	_, again := l.app.Transfer(ctx, alice, "bob", 2000)
	if !errors.Is(again, domain.ErrInsufficientFunds) || again.Error() != first.Error() {
		t.Fatalf("replay: %v, want the first refusal %q", again, first)
	}
	if got := streamHead(t, l, alice); got != head {
		t.Errorf("the replay wrote events: head %d, then %d", head, got)
	}
	if got := keyedEvents(t, "big-send"); len(got) != 0 {
		t.Errorf("events under a refused key: %v", got)
	}
	// Refusals decided before the account is loaded are recorded too.
	unknown := app.WithIdempotencyKey(context.Background(), "alice", "to-nobody")
	_, first = l.app.Transfer(unknown, alice, "dave", 1)
	if !errors.Is(first, domain.ErrUnknownAccount) {
		t.Fatalf("to dave: %v", first)
	}
	openNamed(t, l, "dave")
	if _, again = l.app.Transfer(unknown, alice, "dave", 1); !errors.Is(again, domain.ErrUnknownAccount) || again.Error() != first.Error() {
		t.Fatalf("to dave, once he exists: %v, want the first refusal %q", again, first)
	}
	// A new key is a new request.
	if _, err := l.app.Transfer(app.WithIdempotencyKey(context.Background(), "alice", "big-send-2"), alice, "bob", 2000); err != nil {
		t.Fatalf("new key: %v", err)
	}
}

// TestIdempotentConcurrentSameKey: 20 requests with one key at once, through two App instances
// (two processes, each with its own account locks), run once; every one returns that run's
// result.
func TestIdempotentConcurrentSameKey(t *testing.T) {
	l := start(t, false, app.Config{})
	ids := openNamed(t, l, "alice", "bob")
	alice := ids[0]
	other := app.New(l.store, notify.NewSignal(), app.Config{})
	apps := []*app.App{l.app, other}

	for _, tc := range []struct {
		name, key string
		run       func(a *app.App, ctx context.Context) (app.Result, error)
		want      map[string]int
	}{
		{"buy", "same-buy", func(a *app.App, ctx context.Context) (app.Result, error) { return a.Buy(ctx, alice, "book") },
			map[string]int{domain.TypeItemPurchased: 1}},
		{"transfer", "same-send", func(a *app.App, ctx context.Context) (app.Result, error) { return a.Transfer(ctx, alice, "bob", 7) },
			map[string]int{domain.TypeCoinsSent: 1, domain.TypeCoinsReceived: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 20
			ctx := app.WithIdempotencyKey(context.Background(), "alice", tc.key)
			results := make([]app.Result, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			gate := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-gate
					results[i], errs[i] = tc.run(apps[i%2], ctx)
				})
			}
			close(gate)
			wg.Wait()
			for i := range n {
				if errs[i] != nil {
					t.Fatalf("request %d: %v", i, errs[i])
				}
				if !reflect.DeepEqual(results[i], results[0]) {
					t.Errorf("request %d got %+v, request 0 %+v", i, results[i], results[0])
				}
			}
			if got := keyedEvents(t, tc.key); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("events under the key: %v, want %v", got, tc.want)
			}
		})
	}
	if got, want := coins(t, l, alice), int64(1000-50-7); got != want {
		t.Errorf("alice has %d coins, want %d", got, want)
	}
}

// TestIdempotencyKeyExpiry: an expired key is forgotten (the request runs again, or another
// request may use the key), and the cleanup deletes expired keys only.
func TestIdempotencyKeyExpiry(t *testing.T) {
	l := start(t, false, app.Config{})
	ids := openNamed(t, l, "alice")
	alice := ids[0]
	ctx := context.Background()
	expire := func(key string) {
		t.Helper()
		tag, err := db.Pool.Exec(ctx, `UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE caller = 'alice' AND key = $1`, key)
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("expire %q: %v (%d rows)", key, err, tag.RowsAffected())
		}
	}
	old := app.WithIdempotencyKey(ctx, "alice", "old")
	if _, err := l.app.Buy(old, alice, "pen"); err != nil {
		t.Fatal(err)
	}
	expire("old")
	if _, err := l.app.Buy(old, alice, "pen"); err != nil {
		t.Fatal(err)
	}
	if got := keyedEvents(t, "old")[domain.TypeItemPurchased]; got != 2 {
		t.Errorf("purchases under an expired and reused key: %d, want 2", got)
	}
	expire("old")
	if _, err := l.app.Buy(old, alice, "socks"); err != nil {
		t.Fatalf("another request under an expired key: %v", err)
	}

	for _, k := range []string{"a", "b", "c"} {
		if _, err := l.app.Buy(app.WithIdempotencyKey(ctx, "alice", k), alice, "pen"); err != nil {
			t.Fatal(err)
		}
	}
	expire("a")
	expire("b")
	n, err := l.app.DeleteExpiredIdempotencyKeys(ctx)
	if err != nil || n != 2 {
		t.Fatalf("cleanup deleted %d (%v), want 2", n, err)
	}
	var left []string
	rows, err := db.Pool.Query(ctx, `SELECT key FROM idempotency_keys ORDER BY key`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		left = append(left, k)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"c", "old"}; !reflect.DeepEqual(left, want) {
		t.Errorf("keys left: %v, want %v", left, want)
	}
}

// TestIdempotencyKeyFormat: keys are 1..255 printable ASCII characters; a command under a bad
// key is refused before it runs.
func TestIdempotencyKeyFormat(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{strings.Repeat("k", 255), true},
		{" spaces and ~tildes~ ", true},
		{"0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", true},
		{"", false},
		{strings.Repeat("k", 256), false},
		{"tab\there", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"schlüssel", false},
	} {
		err := app.ValidateIdempotencyKey(tc.key)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, app.ErrInvalidIdempotencyKey)) {
			t.Errorf("ValidateIdempotencyKey(%q) = %v, want ok %v", tc.key, err, tc.ok)
		}
	}

	l := start(t, false, app.Config{})
	alice := openNamed(t, l, "alice")[0]
	head := streamHead(t, l, alice)
	if _, err := l.app.Buy(app.WithIdempotencyKey(context.Background(), "alice", "bad\nkey"), alice, "cup"); !errors.Is(err, app.ErrInvalidIdempotencyKey) {
		t.Fatalf("buy under a bad key: %v", err)
	}
	if got := streamHead(t, l, alice); got != head {
		t.Errorf("a command under a bad key wrote events")
	}
}

// TestIdempotencyUnkeyedFastPath: commands without a key record nothing and still share group
// commits; keyed ones are written alone, with their key.
func TestIdempotencyUnkeyedFastPath(t *testing.T) {
	l := start(t, false, app.Config{})
	alice := openNamed(t, l, "alice")[0]
	ctx := context.Background()
	before := l.store.Stats().GroupedAppends
	if _, err := l.app.Buy(ctx, alice, "cup"); err != nil {
		t.Fatal(err)
	}
	if got := l.store.Stats().GroupedAppends - before; got != 1 {
		t.Errorf("an unkeyed buy went through %d group commits, want 1", got)
	}
	before = l.store.Stats().GroupedAppends
	if _, err := l.app.Buy(app.WithIdempotencyKey(ctx, "alice", "keyed"), alice, "cup"); err != nil {
		t.Fatal(err)
	}
	if got := l.store.Stats().GroupedAppends - before; got != 0 {
		t.Errorf("a keyed buy went through %d group commits, want 0 (written alone with its key)", got)
	}
	var keys int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if keys != 1 {
		t.Errorf("%d idempotency keys recorded, want 1 (the keyed buy's)", keys)
	}
}
