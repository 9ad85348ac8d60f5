package domain

import (
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/google/uuid"
)

// TestFoldOfDecidedEvents runs a sequence of commands, folding each command's events before
// deciding the next, and checks the resulting state field by field.
func TestFoldOfDecidedEvents(t *testing.T) {
	catalog := storeCatalog()
	var alice, bob Account
	must := func(events []Event, err error) []Event {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return events
	}
	apply := func(a *Account, events []Event) {
		t.Helper()
		if err := a.ApplyAll(events); err != nil {
			t.Fatal(err)
		}
	}
	apply(&alice, must(OpenAccount(aliceID, "alice")))
	apply(&bob, must(OpenAccount(bobID, "bob")))
	if alice.Balance != 1000 || alice.Version != 2 || alice.Granted != 1000 || alice.Items != nil {
		t.Fatalf("opened: %+v", alice)
	}

	apply(&alice, must(alice.Grant(500, "bonus", "admin")))                    // 1500, v3
	s, r, err := alice.Send(bob.Ref(), 300, transferID)                        // 1200, v4
	apply(&alice, must([]Event{s}, err))                                       //
	apply(&bob, []Event{r})                                                    // bob 1300, v3
	s, r, err = bob.Send(alice.Ref(), 200, uuid.New())                         // bob 1100, v4
	apply(&bob, must([]Event{s}, err))                                         //
	apply(&alice, []Event{r})                                                  // 1400, v5
	apply(&alice, must(alice.Buy("t-shirt", catalog)))                         // 1320, v6
	apply(&alice, must(alice.Buy("cup", catalog)))                             // 1300, v7
	apply(&alice, must(alice.Buy("cup", catalog)))                             // 1280, v8
	apply(&alice, []Event{ItemPurchased{Item: "pen", Price: 10, Quantity: 3}}) // 1250, v9

	want := Account{
		ID: aliceID, Username: "alice", Version: 9, Balance: 1250,
		Items:   map[string]int64{"t-shirt": 1, "cup": 2, "pen": 3},
		Granted: 1500, Received: 200, Sent: 300, Spent: 150,
	}
	if !reflect.DeepEqual(alice, want) {
		t.Errorf("alice:\n got  %+v\n want %+v", alice, want)
	}
	wantBob := Account{ID: bobID, Username: "bob", Version: 4, Balance: 1100, Granted: 1000, Received: 300, Sent: 200}
	if !reflect.DeepEqual(bob, wantBob) {
		t.Errorf("bob:\n got  %+v\n want %+v", bob, wantBob)
	}
	for _, a := range []Account{alice, bob} {
		if a.Granted+a.Received != a.Balance+a.Sent+a.Spent {
			t.Errorf("%s breaks granted+received = balance+sent+spent: %+v", a.Username, a)
		}
	}
}

func TestApplyRefusesCorruptHistory(t *testing.T) {
	open := opened(aliceRef)
	cases := []struct {
		name    string
		history []Event
	}{
		{"starts with a grant", []Event{CoinsGranted{Amount: 1000, Reason: "welcome"}}},
		{"starts with a send", []Event{CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 1}}},
		{"starts with a receive", []Event{CoinsReceived{TransferID: transferID, From: bobRef, To: aliceRef, Amount: 1}}},
		{"starts with a purchase", []Event{ItemPurchased{Item: "cup", Price: 20, Quantity: 1}}},
		{"opened twice", history(open, []Event{AccountOpened{AccountID: aliceID, Username: "alice"}})},
		{"opened again as another account", history(open, []Event{AccountOpened{AccountID: bobID, Username: "bob"}})},
		{"another account's send", history(open, []Event{CoinsSent{TransferID: transferID, From: bobRef, To: carolRef, Amount: 1}})},
		{"send from another id with our name", history(open, []Event{CoinsSent{TransferID: transferID, From: AccountRef{ID: bobID, Username: "alice"}, To: carolRef, Amount: 1}})},
		{"another account's receive", history(open, []Event{CoinsReceived{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 1}})},
		{"send beyond the balance", history(open, []Event{CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 1001}})},
		{"purchase beyond the balance", history(open, []Event{ItemPurchased{Item: "yacht", Price: 1001, Quantity: 1}})},
		{"purchase beyond the balance by quantity", history(open, []Event{ItemPurchased{Item: "hoody", Price: 300, Quantity: 4}})},
		{"purchase of quantity 0", history(open, []Event{ItemPurchased{Item: "cup", Price: 20, Quantity: 0}})},
		{"purchase of negative quantity", history(open, []Event{ItemPurchased{Item: "cup", Price: 20, Quantity: -1}})},
		{"purchase at a negative price", history(open, []Event{ItemPurchased{Item: "cup", Price: -20, Quantity: 1}})},
		{"purchase cost overflows", history(open, []Event{ItemPurchased{Item: "cup", Price: math.MaxInt64/2 + 1, Quantity: 2}})},
		{"grant overflows int64", history(open, []Event{CoinsGranted{Amount: math.MaxInt64 - 999, Reason: "boom"}})},
		{"receive overflows int64", history(open, []Event{CoinsReceived{TransferID: transferID, From: bobRef, To: aliceRef, Amount: math.MaxInt64}})},
		{"grant total overflows int64", history(open, []Event{
			CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 1000},
			CoinsGranted{Amount: math.MaxInt64 - 500, Reason: "a"},
		})},
		{"event of an unknown kind", history(open, []Event{strangeEvent{}})},
		{"pointer to an event", history(open, []Event{&CoinsGranted{Amount: 1, Reason: "x"}})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var a Account
			last := len(tc.history) - 1
			if err := a.ApplyAll(tc.history[:last]); err != nil {
				t.Fatalf("prefix refused: %v", err)
			}
			version := a.Version
			err := a.Apply(tc.history[last])
			if !errors.Is(err, ErrCorruptHistory) {
				t.Fatalf("Apply(%#v) = %v, want ErrCorruptHistory", tc.history[last], err)
			}
			checkSentinel(t, err, ErrCorruptHistory)
			if a.Version != version {
				t.Errorf("version moved from %d to %d on a refused event", version, a.Version)
			}
			var b Account
			if err := b.ApplyAll(tc.history); !errors.Is(err, ErrCorruptHistory) {
				t.Errorf("ApplyAll = %v, want ErrCorruptHistory", err)
			}
		})
	}
}

type strangeEvent struct{}

func (strangeEvent) EventType() string { return "Strange" }

// TestApplyAcceptsValidEdges guards against a fold that is too strict.
func TestApplyAcceptsValidEdges(t *testing.T) {
	a := fold(t, history(opened(aliceRef), []Event{
		ItemPurchased{Item: "sticker", Price: 0, Quantity: 1},              // free item
		ItemPurchased{Item: "cup", Price: 20, Quantity: 50},                // exactly the balance
		CoinsGranted{Amount: MaxBalance + 5, Reason: "history is history"}, // the cap is a command rule, not a fold rule
	})...)
	if a.Balance != MaxBalance+5 || a.Spent != 1000 || a.Items["cup"] != 50 || a.Items["sticker"] != 1 || a.Version != 5 {
		t.Errorf("got %+v", a)
	}
}

func TestApplyAllStopsAtFirstRefusal(t *testing.T) {
	var a Account
	events := history(opened(aliceRef), []Event{
		CoinsGranted{Amount: 5, Reason: "ok"},
		CoinsSent{TransferID: transferID, From: bobRef, To: aliceRef, Amount: 1},
		CoinsGranted{Amount: 7, Reason: "never folded"},
	})
	if err := a.ApplyAll(events); !errors.Is(err, ErrCorruptHistory) {
		t.Fatalf("ApplyAll = %v", err)
	}
	if a.Version != 3 || a.Balance != 1005 {
		t.Errorf("after refusal: %+v, want version 3 balance 1005", a)
	}
}

func TestApplyToEmptyOpens(t *testing.T) {
	var a Account
	if a.Opened() {
		t.Fatal("zero account reports opened")
	}
	if err := a.Apply(AccountOpened{AccountID: aliceID, Username: "alice"}); err != nil {
		t.Fatal(err)
	}
	if !a.Opened() || a.ID != aliceID || a.Username != "alice" || a.Version != 1 || a.Balance != 0 {
		t.Errorf("after AccountOpened: %+v", a)
	}
	if a.Ref() != aliceRef {
		t.Errorf("Ref = %+v", a.Ref())
	}
}

func TestCloneIsDeep(t *testing.T) {
	orig := fold(t, history(opened(aliceRef), []Event{
		ItemPurchased{Item: "cup", Price: 20, Quantity: 2},
	})...)
	snapshot := *orig
	snapshot.Items = map[string]int64{"cup": 2}

	c := orig.Clone()
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("clone differs: %+v vs %+v", c, orig)
	}
	c.Items["cup"] = 99
	c.Items["hoody"] = 1
	c.Balance = 1
	if err := c.Apply(ItemPurchased{Item: "pen", Price: 1, Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*orig, snapshot) {
		t.Errorf("original changed through its clone: %+v", orig)
	}

	// A clone of an account without items gets its own map on first purchase.
	bare := fold(t, opened(aliceRef)...)
	bc := bare.Clone()
	if err := bc.Apply(ItemPurchased{Item: "cup", Price: 20, Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	if bare.Items != nil || bare.Balance != 1000 || bare.Version != 2 {
		t.Errorf("original changed through its clone: %+v", bare)
	}
}

// TestApplyRefusalLeavesAccountUnchanged: a refused event must not be half folded.
func TestApplyRefusalLeavesAccountUnchanged(t *testing.T) {
	base := history(opened(aliceRef), []Event{ItemPurchased{Item: "cup", Price: 20, Quantity: 1}})
	for name, bad := range map[string]Event{
		"grant overflow":         CoinsGranted{Amount: math.MaxInt64, Reason: "boom"},
		"purchase overdraft":     ItemPurchased{Item: "yacht", Price: 5000, Quantity: 1},
		"send overdraft":         CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 5000},
		"receive overflow":       CoinsReceived{TransferID: transferID, From: bobRef, To: aliceRef, Amount: math.MaxInt64},
		"purchase cost overflow": ItemPurchased{Item: "cup", Price: math.MaxInt64, Quantity: 2},
	} {
		t.Run(name, func(t *testing.T) {
			a := fold(t, base...)
			before := a.Clone()
			if err := a.Apply(bad); !errors.Is(err, ErrCorruptHistory) {
				t.Fatalf("Apply = %v, want ErrCorruptHistory", err)
			}
			if !reflect.DeepEqual(a, before) {
				t.Errorf("refused event changed the account:\n before %+v\n after  %+v", before, a)
			}
		})
	}
}

// TestApplyRefusesNegativeAmounts: no command can decide a grant or transfer of a negative
// amount, so such an event in a stream is corruption, just like a purchase at a negative price.
func TestApplyRefusesNegativeAmounts(t *testing.T) {
	for name, bad := range map[string]Event{
		"grant":   CoinsGranted{Amount: -100, Reason: "claw back"},
		"send":    CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: -100},
		"receive": CoinsReceived{TransferID: transferID, From: bobRef, To: aliceRef, Amount: -100},
	} {
		t.Run(name, func(t *testing.T) {
			a := fold(t, opened(aliceRef)...)
			if err := a.Apply(bad); !errors.Is(err, ErrCorruptHistory) {
				t.Errorf("Apply(%#v) = %v, want ErrCorruptHistory; account now %+v", bad, err, a)
			}
		})
	}
}
