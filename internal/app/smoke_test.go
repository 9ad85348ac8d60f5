package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
)

func TestCommandsAndInfo(t *testing.T) {
	l := start(t, true, app.Config{})
	ctx := context.Background()
	alice, _, err := l.app.OpenAccount(ctx, "alice", "hash")
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := l.app.OpenAccount(ctx, "bob", "hash")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.app.OpenAccount(ctx, "bob", "hash"); !errors.Is(err, domain.ErrAccountExists) {
		t.Fatalf("second open: %v", err)
	}
	if _, err := l.app.Buy(ctx, alice, "cup"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.app.Transfer(ctx, alice, "bob", 15); err != nil {
		t.Fatal(err)
	}
	if _, err := l.app.Transfer(ctx, bob, "alice", 5); err != nil {
		t.Fatal(err)
	}
	if _, err := l.app.Buy(ctx, alice, "pink-hoody"); err != nil {
		t.Fatal(err)
	}
	_, err = l.app.Buy(ctx, alice, "pink-hoody")
	if !errors.Is(err, domain.ErrInsufficientFunds) || !strings.Contains(err.Error(), "not enough coin") {
		t.Fatalf("second hoody: %v", err)
	}
	if _, err := l.app.Transfer(ctx, alice, "alice", 1); !errors.Is(err, domain.ErrSelfTransfer) {
		t.Fatalf("self: %v", err)
	}
	if _, err := l.app.Transfer(ctx, alice, "nobody", 1); !errors.Is(err, domain.ErrUnknownAccount) {
		t.Fatalf("unknown: %v", err)
	}
	if _, err := l.app.Buy(ctx, alice, "yacht"); !errors.Is(err, domain.ErrUnknownItem) {
		t.Fatalf("yacht: %v", err)
	}
	in, err := l.app.Info(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	if in.Coins != 1000-20-15+5-500 {
		t.Fatalf("alice coins %d", in.Coins)
	}
	if len(in.Inventory) != 2 || len(in.Sent) != 1 || len(in.Received) != 1 || in.Sent[0].Counterpart != "bob" || in.Received[0].Amount != 5 {
		t.Fatalf("alice info %+v", in)
	}
	t.Logf("stats %+v", l.app.Stats())
}
