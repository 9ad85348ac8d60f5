package domain

import (
	"errors"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestOpenAccount(t *testing.T) {
	welcome := func(id uuid.UUID, name string) []Event {
		return []Event{AccountOpened{AccountID: id, Username: name}, CoinsGranted{Amount: 1000, Reason: "welcome"}}
	}
	openedWith := func(id uuid.UUID, name string) func(t *testing.T, a *Account) {
		return func(t *testing.T, a *Account) {
			t.Helper()
			if a.ID != id || a.Username != name || a.Balance != 1000 || a.Granted != 1000 || a.Version != 2 || !a.Opened() {
				t.Errorf("opened account = %+v", a)
			}
		}
	}
	bad := func(name, username string) gwt {
		return gwt{name: name, when: openCmd(aliceID, username), wantErr: ErrInvalidUsername}
	}
	runGWT(t, []gwt{
		{name: "valid", when: openCmd(aliceID, "alice"), then: welcome(aliceID, "alice"), after: openedWith(aliceID, "alice")},
		{name: "unicode name", when: openCmd(aliceID, "Zoë 名前"), then: welcome(aliceID, "Zoë 名前"), after: openedWith(aliceID, "Zoë 名前")},
		{name: "one character", when: openCmd(bobID, "b"), then: welcome(bobID, "b")},
		{name: "64 multi-byte runes", when: openCmd(aliceID, strings.Repeat("é", 64)), then: welcome(aliceID, strings.Repeat("é", 64))},
		{name: "inner spaces", when: openCmd(aliceID, "a b  c"), then: welcome(aliceID, "a b  c")},
		bad("empty", ""),
		bad("65 runes", strings.Repeat("é", 65)),
		bad("65 ascii", strings.Repeat("a", 65)),
		bad("10000 chars", strings.Repeat("x", 10_000)),
		bad("invalid utf-8", "al\xffice"),
		bad("truncated utf-8", "Zo\xc3"),
		bad("NUL", "ali\x00ce"),
		bad("newline", "ali\nce"),
		bad("tab inside", "ali\tce"),
		bad("DEL", "alice\x7f"),
		bad("C1 control", "alice\u0085x"),
		bad("escape", "\x1b[31malice"),
		bad("leading space", " alice"),
		bad("trailing space", "alice "),
		bad("trailing newline", "alice\n"),
		bad("leading tab", "\talice"),
		bad("trailing no-break space", "alice\u00a0"),
		bad("only spaces", "   "),
		{name: "nil id", when: openCmd(uuid.Nil, "alice"), wantErr: ErrUnknownAccount},
	})
}

func TestValidateUsername(t *testing.T) {
	for _, ok := range []string{"alice", "Zoë 名前", "a", strings.Repeat("名", 64), "o'brien-2"} {
		if err := ValidateUsername(ok); err != nil {
			t.Errorf("ValidateUsername(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("名", 65), "\xff", "a\x00", " a", "a ", "a\r\nb"} {
		if err := ValidateUsername(bad); !errors.Is(err, ErrInvalidUsername) {
			t.Errorf("ValidateUsername(%q) = %v, want ErrInvalidUsername", bad, err)
		}
	}
}

func TestGrant(t *testing.T) {
	alice := opened(aliceRef)
	grant := func(n Coins, reason, by string) []Event {
		return []Event{CoinsGranted{Amount: n, Reason: reason, GrantedBy: by}}
	}
	atCap := history(alice, []Event{CoinsGranted{Amount: MaxBalance - 1000, Reason: "to the cap"}})
	runGWT(t, []gwt{
		{name: "ok", given: alice, when: grantCmd(500, "hackathon winner", "admin"),
			then: grant(500, "hackathon winner", "admin"), after: wantBalance(1500)},
		{name: "ok without granter", given: alice, when: grantCmd(1, "x", ""), then: grant(1, "x", "")},
		{name: "reason of 200 characters", given: alice, when: grantCmd(7, strings.Repeat("ü", 200), "admin"),
			then: grant(7, strings.Repeat("ü", 200), "admin")},
		{name: "up to MaxBalance exactly", given: alice, when: grantCmd(MaxBalance-1000, "cap", "admin"),
			then: grant(MaxBalance-1000, "cap", "admin"), after: wantBalance(MaxBalance)},
		{name: "zero", given: alice, when: grantCmd(0, "bonus", "admin"), wantErr: ErrInvalidAmount},
		{name: "negative", given: alice, when: grantCmd(-100, "bonus", "admin"), wantErr: ErrInvalidAmount},
		{name: "MinInt64", given: alice, when: grantCmd(math.MinInt64, "bonus", "admin"), wantErr: ErrInvalidAmount},
		{name: "empty reason", given: alice, when: grantCmd(10, "", "admin"), wantErr: ErrInvalidReason},
		{name: "whitespace reason", given: alice, when: grantCmd(10, " \t\n ", "admin"), wantErr: ErrInvalidReason},
		{name: "reason of 201 characters", given: alice, when: grantCmd(10, strings.Repeat("ü", 201), "admin"), wantErr: ErrInvalidReason},
		{name: "reason of 10000 characters", given: alice, when: grantCmd(10, strings.Repeat("r", 10_000), "admin"), wantErr: ErrInvalidReason},
		{name: "reason not utf-8", given: alice, when: grantCmd(10, "bonus\xff", "admin"), wantErr: ErrInvalidReason},
		{name: "one above MaxBalance", given: alice, when: grantCmd(MaxBalance-999, "too much", "admin"), wantErr: ErrAmountOverflow},
		{name: "MaxBalance on top of the welcome", given: alice, when: grantCmd(MaxBalance, "too much", "admin"), wantErr: ErrAmountOverflow},
		{name: "MaxInt64", given: alice, when: grantCmd(math.MaxInt64, "too much", "admin"), wantErr: ErrAmountOverflow},
		{name: "one coin at the cap", given: atCap, when: grantCmd(1, "more", "admin"), wantErr: ErrAmountOverflow},
		{name: "unopened account", when: grantCmd(10, "bonus", "admin"), wantErr: ErrUnknownAccount},
	})
}

func TestSend(t *testing.T) {
	alice := opened(aliceRef)
	transfer := func(from, to AccountRef, n Coins) []Event {
		return []Event{
			CoinsSent{TransferID: transferID, From: from, To: to, Amount: n},
			CoinsReceived{TransferID: transferID, From: from, To: to, Amount: n},
		}
	}
	richer := history(alice, []Event{CoinsReceived{TransferID: uuid.New(), From: bobRef, To: aliceRef, Amount: 500}})
	poorer := history(alice, []Event{ItemPurchased{Item: "pink-hoody", Price: 500, Quantity: 1}})
	runGWT(t, []gwt{
		{name: "ok", given: alice, when: sendCmd(bobRef, 300, transferID),
			then: transfer(aliceRef, bobRef, 300), after: wantBalance(700)},
		{name: "one coin", given: alice, when: sendCmd(bobRef, 1, transferID),
			then: transfer(aliceRef, bobRef, 1), after: wantBalance(999)},
		{name: "exact balance leaves zero", given: alice, when: sendCmd(bobRef, 1000, transferID),
			then: transfer(aliceRef, bobRef, 1000), after: wantBalance(0)},
		{name: "received coins can be sent on", given: richer, when: sendCmd(carolRef, 1500, transferID),
			then: transfer(aliceRef, carolRef, 1500), after: wantBalance(0)},
		{name: "one more than balance", given: alice, when: sendCmd(bobRef, 1001, transferID),
			wantErr: ErrInsufficientFunds, wantMsg: "not enough coin"},
		{name: "more than balance after a purchase", given: poorer, when: sendCmd(bobRef, 501, transferID),
			wantErr: ErrInsufficientFunds, wantMsg: "not enough coin"},
		{name: "from an empty account", given: history(alice, []Event{CoinsSent{TransferID: uuid.New(), From: aliceRef, To: bobRef, Amount: 1000}}),
			when: sendCmd(bobRef, 1, transferID), wantErr: ErrInsufficientFunds, wantMsg: "not enough coin"},
		{name: "zero", given: alice, when: sendCmd(bobRef, 0, transferID), wantErr: ErrInvalidAmount},
		{name: "negative", given: alice, when: sendCmd(bobRef, -5, transferID), wantErr: ErrInvalidAmount},
		{name: "MinInt64", given: alice, when: sendCmd(bobRef, math.MinInt64, transferID), wantErr: ErrInvalidAmount},
		{name: "above MaxBalance", given: alice, when: sendCmd(bobRef, MaxBalance+1, transferID), wantErr: ErrAmountOverflow},
		{name: "MaxInt64", given: alice, when: sendCmd(bobRef, math.MaxInt64, transferID), wantErr: ErrAmountOverflow},
		{name: "to yourself", given: alice, when: sendCmd(aliceRef, 10, transferID), wantErr: ErrSelfTransfer},
		{name: "to yourself under another name", given: alice, when: sendCmd(AccountRef{ID: aliceID, Username: "bob"}, 10, transferID), wantErr: ErrSelfTransfer},
		{name: "nil recipient", given: alice, when: sendCmd(AccountRef{}, 10, transferID), wantErr: ErrUnknownAccount},
		{name: "nil recipient id with a name", given: alice, when: sendCmd(AccountRef{Username: "bob"}, 10, transferID), wantErr: ErrUnknownAccount},
		{name: "unopened sender", when: sendCmd(bobRef, 10, transferID), wantErr: ErrUnknownAccount},
	})
}

// TestSendHalvesDescribeTheSameTransfer checks each field of both halves explicitly and that
// each half folds into its own party's stream.
func TestSendHalvesDescribeTheSameTransfer(t *testing.T) {
	alice := fold(t, opened(aliceRef)...)
	bob := fold(t, opened(bobRef)...)
	id := uuid.MustParse("11111111-2222-4333-8444-555555555555")

	sent, received, err := alice.Send(bob.Ref(), 250, id)
	if err != nil {
		t.Fatal(err)
	}
	if sent.TransferID != id || received.TransferID != id {
		t.Errorf("transfer ids %s / %s, want %s", sent.TransferID, received.TransferID, id)
	}
	for name, ref := range map[string][2]AccountRef{"sent": {sent.From, sent.To}, "received": {received.From, received.To}} {
		if ref[0] != (AccountRef{ID: aliceID, Username: "alice"}) {
			t.Errorf("%s.From = %+v", name, ref[0])
		}
		if ref[1] != (AccountRef{ID: bobID, Username: "bob"}) {
			t.Errorf("%s.To = %+v", name, ref[1])
		}
	}
	if sent.Amount != 250 || received.Amount != 250 {
		t.Errorf("amounts %d / %d, want 250", sent.Amount, received.Amount)
	}
	if err := alice.Apply(sent); err != nil {
		t.Fatal(err)
	}
	if err := bob.Apply(received); err != nil {
		t.Fatal(err)
	}
	if alice.Balance != 750 || alice.Sent != 250 || bob.Balance != 1250 || bob.Received != 250 {
		t.Errorf("after transfer alice %+v bob %+v", alice, bob)
	}
	// Each half belongs to exactly one stream.
	if err := bob.Clone().Apply(sent); !errors.Is(err, ErrCorruptHistory) {
		t.Errorf("sender's half folded into the recipient: %v", err)
	}
	if err := alice.Clone().Apply(received); !errors.Is(err, ErrCorruptHistory) {
		t.Errorf("recipient's half folded into the sender: %v", err)
	}
}

func TestBuy(t *testing.T) {
	alice := opened(aliceRef)
	catalog := storeCatalog()
	want := map[string]Coins{
		"t-shirt": 80, "cup": 20, "book": 50, "pen": 10, "powerbank": 200,
		"hoody": 300, "umbrella": 200, "socks": 10, "wallet": 50, "pink-hoody": 500,
	}
	if !reflect.DeepEqual(map[string]Coins(catalog), want) {
		t.Fatalf("catalog fixture drifted: %v", catalog)
	}
	names := make([]string, 0, len(want))
	for item := range want {
		names = append(names, item)
	}
	sort.Strings(names)

	var cases []gwt
	for _, item := range names {
		price := want[item]
		cases = append(cases, gwt{
			name: item, given: alice, when: buyCmd(item, catalog),
			then:  []Event{ItemPurchased{Item: item, Price: price, Quantity: 1}},
			after: wantBalance(1000 - price),
		})
	}
	left200 := history(alice, []Event{
		ItemPurchased{Item: "pink-hoody", Price: 500, Quantity: 1},
		ItemPurchased{Item: "hoody", Price: 300, Quantity: 1},
	})
	broke := history(alice, []Event{CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 1000}})
	cases = append(cases,
		gwt{name: "exact balance", given: left200, when: buyCmd("powerbank", catalog),
			then: []Event{ItemPurchased{Item: "powerbank", Price: 200, Quantity: 1}}, after: wantBalance(0)},
		gwt{name: "insufficient by one", given: history(left200, []Event{ItemPurchased{Item: "pen", Price: 10, Quantity: 1}}),
			when: buyCmd("umbrella", catalog), wantErr: ErrInsufficientFunds, wantMsg: "not enough coin"},
		gwt{name: "insufficient", given: left200, when: buyCmd("pink-hoody", catalog), wantErr: ErrInsufficientFunds, wantMsg: "not enough coin"},
		gwt{name: "zero balance", given: broke, when: buyCmd("pen", catalog), wantErr: ErrInsufficientFunds, wantMsg: "not enough coin"},
		gwt{name: "unknown item", given: alice, when: buyCmd("yacht", catalog), wantErr: ErrUnknownItem},
		gwt{name: "empty item", given: alice, when: buyCmd("", catalog), wantErr: ErrUnknownItem},
		gwt{name: "item names are exact", given: alice, when: buyCmd("T-Shirt", catalog), wantErr: ErrUnknownItem},
		gwt{name: "item name with space", given: alice, when: buyCmd("cup ", catalog), wantErr: ErrUnknownItem},
		gwt{name: "unknown item with no coins", given: broke, when: buyCmd("yacht", catalog), wantErr: ErrUnknownItem},
		gwt{name: "empty catalog", given: alice, when: buyCmd("cup", Catalog{}), wantErr: ErrUnknownItem},
		gwt{name: "nil catalog", given: alice, when: buyCmd("cup", nil), wantErr: ErrUnknownItem},
		gwt{name: "unopened account", when: buyCmd("cup", catalog), wantErr: ErrUnknownAccount},
		gwt{name: "price comes from the catalog given", given: alice, when: buyCmd("cup", Catalog{"cup": 25}),
			then: []Event{ItemPurchased{Item: "cup", Price: 25, Quantity: 1}}, after: wantBalance(975)},
	)
	runGWT(t, cases)
}

// TestBuyHistoryKeepsThePricePaid: a purchase recorded at an old price folds at that price,
// whatever the catalog says now, and new purchases are at the new price.
func TestBuyHistoryKeepsThePricePaid(t *testing.T) {
	oldCatalog := Catalog{"t-shirt": 60}
	a := fold(t, opened(aliceRef)...)
	events, err := a.Buy("t-shirt", oldCatalog)
	if err != nil {
		t.Fatal(err)
	}
	stored := append(opened(aliceRef), events...)

	// The price goes up; the stream is replayed.
	replayed := fold(t, stored...)
	if replayed.Balance != 940 || replayed.Spent != 60 || replayed.Items["t-shirt"] != 1 {
		t.Fatalf("replayed at old price: %+v, want balance 940, spent 60", replayed)
	}
	events, err = replayed.Buy("t-shirt", storeCatalog())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(events, []Event{ItemPurchased{Item: "t-shirt", Price: 80, Quantity: 1}}) {
		t.Fatalf("new purchase = %#v, want at price 80", events)
	}
	if err := replayed.ApplyAll(events); err != nil {
		t.Fatal(err)
	}
	if replayed.Balance != 860 || replayed.Spent != 140 || replayed.Items["t-shirt"] != 2 {
		t.Fatalf("after second purchase: %+v, want balance 860, spent 140, 2 t-shirts", replayed)
	}
}

func TestCatalogPrice(t *testing.T) {
	c := storeCatalog()
	if p, err := c.Price("hoody"); err != nil || p != 300 {
		t.Errorf("Price(hoody) = %d, %v", p, err)
	}
	if p, err := c.Price("free lunch"); !errors.Is(err, ErrUnknownItem) || p != 0 {
		t.Errorf("Price(free lunch) = %d, %v", p, err)
	}
}

func TestDomainErrorsAreDistinct(t *testing.T) {
	for i, a := range allSentinels {
		for j, b := range allSentinels {
			if i != j && errors.Is(a, b) {
				t.Errorf("%q matches %q", a, b)
			}
		}
	}
	if !strings.Contains(ErrInsufficientFunds.Error(), "not enough coin") {
		t.Errorf("ErrInsufficientFunds text %q", ErrInsufficientFunds)
	}
}

func TestStreamID(t *testing.T) {
	if got := StreamID(aliceID); got != "account-0a11ce00-0000-4000-8000-000000000001" {
		t.Errorf("StreamID = %q", got)
	}
	if StreamID(aliceID) == StreamID(bobID) {
		t.Error("two accounts share a stream")
	}
}
