package main

import "testing"

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
