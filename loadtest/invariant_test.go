package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/internal/pgtest"
)

func TestInvariantEvaluate(t *testing.T) {
	good := Invariant{
		Accounts: 3, Events: 20, Granted: 3000, Spent: 130, ItemsBought: 7, Sent: 55, Received: 55,
		LogBalances: 2870, LowestBalance: 0, BalanceRows: 3, ReadModelBalances: 2870, LowestReadModel: 12,
		InventoryQuantity: 7,
	}
	g := good
	g.evaluate()
	if !g.Holds {
		t.Fatalf("a consistent bank fails: %+v", g.Checks)
	}
	for name, change := range map[string]func(*Invariant){
		"coins created by a transfer": func(i *Invariant) { i.Received++ },
		"log total off":               func(i *Invariant) { i.LogBalances++ },
		"negative balance in the log": func(i *Invariant) { i.LowestBalance = -1 },
		"read models behind":          func(i *Invariant) { i.ReadModelsBehind = 2 },
		"read model total off":        func(i *Invariant) { i.ReadModelBalances-- },
		"negative read model balance": func(i *Invariant) { i.LowestReadModel = -5 },
		"one balance differs":         func(i *Invariant) { i.BalanceMismatches = 1 },
		"a balance row missing":       func(i *Invariant) { i.BalanceRows = 2 },
		"inventory off":               func(i *Invariant) { i.InventoryQuantity = 6 },
	} {
		inv := good
		change(&inv)
		inv.evaluate()
		if inv.Holds {
			t.Errorf("%s: the invariant holds", name)
		}
		failed := 0
		for _, c := range inv.Checks {
			if !c.OK {
				failed++
			}
		}
		if failed == 0 {
			t.Errorf("%s: no check names the failure", name)
		}
	}
}

// TestInvariantReadsTheReadModelsThatServe: after an operator switched balance to version 2,
// the lag groups and the invariant follow it, instead of version 1's emptied table.
func TestInvariantReadsTheReadModelsThatServe(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pgtest.New(t, "loadtest_invariant")
	if _, err := db.Pool.Exec(ctx, `UPDATE projection_versions SET active_version = 2 WHERE name = 'balance'`); err != nil {
		t.Fatal(err)
	}
	serving, err := servingReadModels(ctx, db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(serving.groups, ","); got != "balance_v2,inventory_v1,history_v2" {
		t.Fatalf("groups = %s", got)
	}
	// A balance row that only version 2 holds, of an account without events: the invariant
	// must count it, and find that it differs from the log.
	if _, err := db.Pool.Exec(ctx, `INSERT INTO balance_v2 (account_id, username, coins, received, sent, spent)
		VALUES ($1, 'someone', 7, 0, 0, 0)`, uuid.New()); err != nil {
		t.Fatal(err)
	}
	inv, err := checkInvariant(ctx, db.Pool, serving, serving.groups, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if inv.BalanceRows != 1 || inv.ReadModelBalances != 7 || inv.BalanceMismatches != 1 || inv.Holds {
		t.Fatalf("the invariant did not read balance_v2: %+v", inv)
	}
}
