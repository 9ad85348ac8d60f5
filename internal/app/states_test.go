package app_test

import (
	"context"
	"testing"

	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/notify"
)

// Two processes command the same accounts: each decides from the state its last command left,
// which the other process makes stale. The stale guess costs a concurrency conflict and a
// reload, never a wrong decision: every purchase and transfer lands, and the balances add up.
func TestCachedStatesGoStaleAcrossProcesses(t *testing.T) {
	l := start(t, false, app.Config{})
	ids := openNamed(t, l, "alice", "bob")
	alice, bob := ids[0], ids[1]
	other := app.New(l.store, notify.NewSignal(), app.Config{})
	ctx := context.Background()
	for i := range 10 {
		a := []*app.App{l.app, other}[i%2]
		if _, err := a.Buy(ctx, alice, "pen"); err != nil {
			t.Fatalf("buy %d: %v", i, err)
		}
		if _, err := a.Transfer(ctx, bob, "alice", 3); err != nil {
			t.Fatalf("transfer %d: %v", i, err)
		}
	}
	// One process buys until alice cannot pay: it must refuse exactly at the real balance
	// (1000 - 10*10 + 10*3 = 930 before these).
	n := 0
	for ; ; n++ {
		if _, err := l.app.Buy(ctx, alice, "pink-hoody"); err != nil {
			break
		}
	}
	if n != 1 {
		t.Fatalf("alice bought %d pink hoodies (500 each) with 930 coins", n)
	}
	if s := l.app.Stats(); s.Conflicts == 0 {
		t.Errorf("no conflict: the test did not make a cached state stale (%+v)", s)
	}
	fa, err := foldStream(ctx, l.store, alice)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := foldStream(ctx, l.store, bob)
	if err != nil {
		t.Fatal(err)
	}
	if fa.acc.Balance != 430 || fb.acc.Balance != 970 {
		t.Errorf("balances alice %d bob %d, want 430 and 970", fa.acc.Balance, fb.acc.Balance)
	}
}

// A refusal is never decided on a stale cached state: when another process has given the
// account coins, a purchase the cached balance cannot pay for is decided again on the stored
// state, and goes through.
func TestCachedStateNeverRefusesWrongly(t *testing.T) {
	l := start(t, false, app.Config{})
	ids := openNamed(t, l, "alice", "bob")
	alice := ids[0]
	other := app.New(l.store, notify.NewSignal(), app.Config{})
	ctx := context.Background()
	if _, err := l.app.Buy(ctx, alice, "pink-hoody"); err != nil { // 1000 → 500, cached here
		t.Fatal(err)
	}
	if _, err := l.app.Buy(ctx, alice, "pink-hoody"); err != nil { // 500 → 0, cached here
		t.Fatal(err)
	}
	if _, err := other.Transfer(ctx, ids[1], "alice", 500); err != nil { // another process: 0 → 500
		t.Fatal(err)
	}
	if _, err := l.app.Buy(ctx, alice, "pink-hoody"); err != nil {
		t.Fatalf("refused on the cached balance of 0 while alice holds 500: %v", err)
	}
}
