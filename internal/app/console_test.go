package app_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
)

// TestConsoleQueries: the queries the console reads through: accounts by name prefix (a LIKE
// wildcard in the prefix is a literal), paged in byte order; sessions that end when signed out
// or expired; the bank's totals folded from the log, incrementally; the log newest first.
func TestConsoleQueries(t *testing.T) {
	l := start(t, true, app.Config{})
	ctx := context.Background()
	ids := map[string]uuid.UUID{}
	for _, name := range []string{"ann", "anna", "an_x", "bob"} {
		id, _, err := l.app.OpenAccount(ctx, name, "hash")
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	if _, err := l.app.Buy(ctx, ids["ann"], "cup"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.app.Transfer(ctx, ids["bob"], "anna", 30); err != nil {
		t.Fatal(err)
	}
	waitProjected(t, 10*time.Second)

	names := func(list []app.AccountSummary) (out []string) {
		for _, a := range list {
			out = append(out, a.Username)
		}
		return out
	}
	first, err := l.app.Accounts(ctx, "an", "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(first); !slices.Equal(got, []string{"an_x", "ann"}) {
		t.Errorf("first page of an*: %v", got)
	}
	if first[1].Coins != 980 || first[1].AccountID != ids["ann"] || first[1].LastActivity.IsZero() {
		t.Errorf("ann's line: %+v", first[1])
	}
	next, err := l.app.Accounts(ctx, "an", "ann", 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(next); !slices.Equal(got, []string{"anna"}) || next[0].Coins != 1030 {
		t.Errorf("second page of an*: %+v", next)
	}
	literal, err := l.app.Accounts(ctx, "an_", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(literal); !slices.Equal(got, []string{"an_x"}) {
		t.Errorf("an_* (the _ a literal): %v", got)
	}
	byID, err := l.app.Usernames(ctx, []uuid.UUID{ids["bob"], ids["an_x"], uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	if len(byID) != 2 || byID[ids["bob"]] != "bob" || byID[ids["an_x"]] != "an_x" {
		t.Errorf("usernames: %v", byID)
	}

	// Sessions.
	s, err := l.app.CreateSession(ctx, "ann", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := l.app.SessionOf(ctx, s.Token)
	if err != nil || got.Username != "ann" || got.CSRFToken != s.CSRFToken || got.CSRFToken == "" {
		t.Fatalf("session: %+v, %v", got, err)
	}
	if _, err := l.app.SessionOf(ctx, s.CSRFToken); !errors.Is(err, app.ErrNoSession) {
		t.Errorf("the CSRF token taken for a session: %v", err)
	}
	if err := l.app.EndSession(ctx, s.Token); err != nil {
		t.Fatal(err)
	}
	if _, err := l.app.SessionOf(ctx, s.Token); !errors.Is(err, app.ErrNoSession) {
		t.Errorf("a signed-out session: %v", err)
	}
	expired, err := l.app.CreateSession(ctx, "ann", -time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.app.SessionOf(ctx, expired.Token); !errors.Is(err, app.ErrNoSession) {
		t.Errorf("an expired session: %v", err)
	}

	// Totals: four welcome grants, a cup, a transfer; then one more purchase, folded on.
	waitReadable(t, l, 11)
	tot, err := l.app.BankTotals(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !tot.Holds() || !tot.CaughtUp || tot.Accounts != 4 || tot.Granted != 4000 || tot.Spent != 20 ||
		tot.Balances != 3980 || tot.Sent != 30 || tot.Received != 30 || tot.Events != 11 {
		t.Errorf("totals: %+v", tot)
	}
	if _, err := l.app.Buy(ctx, ids["bob"], "book"); err != nil {
		t.Fatal(err)
	}
	waitReadable(t, l, 12)
	tot, err = l.app.BankTotals(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !tot.Holds() || tot.Spent != 70 || tot.Balances != 3930 || tot.Events != 12 {
		t.Errorf("totals after a purchase: %+v", tot)
	}

	// The log newest first is the log in reverse, page after page.
	forward, err := l.app.AuditLog(ctx, eventstore.Checkpoint{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var backward []eventstore.RecordedEvent
	var before eventstore.Checkpoint
	for {
		page, err := l.app.AuditLogBefore(ctx, before, 4)
		if err != nil {
			t.Fatal(err)
		}
		backward = append(backward, page...)
		if len(page) < 4 {
			break
		}
		before = page[len(page)-1].Checkpoint()
	}
	slices.Reverse(backward)
	if len(backward) != len(forward) || len(forward) != 12 {
		t.Fatalf("%d events backwards, %d forwards", len(backward), len(forward))
	}
	for i := range forward {
		if forward[i].ID != backward[i].ID {
			t.Fatalf("event %d: %s forwards, %s backwards", i, forward[i].ID, backward[i].ID)
		}
	}
}

// waitReadable waits until the log's readers can read n events: the fence is the oldest
// transaction running on the whole server, which other tests share.
func waitReadable(t *testing.T, l *ledger, n int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		head, err := l.store.LogHead(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if head.Position >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log is readable up to position %d, want %d", head.Position, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
