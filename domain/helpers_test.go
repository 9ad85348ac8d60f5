package domain

import (
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Fixed identities so that expected events can be written out literally.
var (
	aliceID    = uuid.MustParse("0a11ce00-0000-4000-8000-000000000001")
	bobID      = uuid.MustParse("0b0b0000-0000-4000-8000-000000000002")
	carolID    = uuid.MustParse("0ca201e0-0000-4000-8000-000000000003")
	transferID = uuid.MustParse("7a5f0000-0000-4000-8000-0000000000f1")

	aliceRef = AccountRef{ID: aliceID, Username: "alice"}
	bobRef   = AccountRef{ID: bobID, Username: "bob"}
	carolRef = AccountRef{ID: carolID, Username: "carol"}
)

// storeCatalog is the merch store's catalog as the business publishes it.
func storeCatalog() Catalog {
	return Catalog{
		"t-shirt":    80,
		"cup":        20,
		"book":       50,
		"pen":        10,
		"powerbank":  200,
		"hoody":      300,
		"umbrella":   200,
		"socks":      10,
		"wallet":     50,
		"pink-hoody": 500,
	}
}

// allSentinels lists every domain error; a refusal must match exactly the one it is about.
var allSentinels = []error{
	ErrInsufficientFunds,
	ErrUnknownItem,
	ErrSelfTransfer,
	ErrUnknownAccount,
	ErrAccountExists,
	ErrInvalidUsername,
	ErrInvalidReason,
	ErrCorruptHistory,
	ErrAmountOverflow,
	ErrInvalidAmount,
}

// opened is the history every account starts with: opened, then the welcome grant.
func opened(ref AccountRef) []Event {
	return []Event{
		AccountOpened{AccountID: ref.ID, Username: ref.Username},
		CoinsGranted{Amount: WelcomeGrant, Reason: "welcome"},
	}
}

// history concatenates event slices.
func history(parts ...[]Event) []Event {
	var out []Event
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// fold builds an account from its history, failing the test if the history is refused.
func fold(t testing.TB, events ...Event) *Account {
	t.Helper()
	var a Account
	if err := a.ApplyAll(events); err != nil {
		t.Fatalf("fold of %d events: %v", len(events), err)
	}
	return &a
}

// sendCmd adapts Send to the given/when/then command shape. If Send returns an error together
// with non-zero halves, the halves are passed on so the runner reports them.
func sendCmd(to AccountRef, amount Coins, id uuid.UUID) func(*Account) ([]Event, error) {
	return func(a *Account) ([]Event, error) {
		s, r, err := a.Send(to, amount, id)
		if err != nil {
			if s != (CoinsSent{}) || r != (CoinsReceived{}) {
				return []Event{s, r}, err
			}
			return nil, err
		}
		return []Event{s, r}, nil
	}
}

func buyCmd(item string, catalog Catalog) func(*Account) ([]Event, error) {
	return func(a *Account) ([]Event, error) { return a.Buy(item, catalog) }
}

func grantCmd(amount Coins, reason, by string) func(*Account) ([]Event, error) {
	return func(a *Account) ([]Event, error) { return a.Grant(amount, reason, by) }
}

func openCmd(id uuid.UUID, name string) func(*Account) ([]Event, error) {
	return func(*Account) ([]Event, error) { return OpenAccount(id, name) }
}

// gwt is one given/when/then case.
type gwt struct {
	name    string
	given   []Event                         // the account's history
	when    func(*Account) ([]Event, error) // the command
	then    []Event                         // the events it must decide
	wantErr error                           // or the domain error it must refuse with
	wantMsg string                          // optional text the error message must contain
	after   func(t *testing.T, a *Account)  // optional check of the account after folding then
}

func runGWT(t *testing.T, cases []gwt) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.then == nil) == (tc.wantErr == nil) {
				t.Fatalf("bad case: exactly one of then and wantErr must be set")
			}
			a := fold(t, tc.given...)
			before := a.Clone()

			got, err := tc.when(a)

			if !reflect.DeepEqual(a, before) {
				t.Errorf("command mutated the account:\n before %+v\n after  %+v", before, a)
			}
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("got events %+v, want error %v", got, tc.wantErr)
				}
				checkSentinel(t, err, tc.wantErr)
				if tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("error %q does not contain %q", err, tc.wantMsg)
				}
				if got != nil {
					t.Errorf("refusal came with events %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tc.then) {
				t.Fatalf("events:\n got  %#v\n want %#v", got, tc.then)
			}
			// What a command decides must fold cleanly into the account it was decided on
			// (the recipient's half of a transfer belongs to the other stream).
			for _, e := range got {
				if r, ok := e.(CoinsReceived); ok && r.To.ID != a.ID {
					continue
				}
				if err := a.Apply(e); err != nil {
					t.Fatalf("decided event %#v does not fold: %v", e, err)
				}
			}
			if tc.after != nil {
				tc.after(t, a)
			}
		})
	}
}

// checkSentinel asserts err matches want and none of the other domain errors.
func checkSentinel(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %q is not %q", err, want)
	}
	for _, s := range allSentinels {
		if s != want && errors.Is(err, s) {
			t.Errorf("error %q also matches %q", err, s)
		}
	}
}

func wantBalance(b Coins) func(t *testing.T, a *Account) {
	return func(t *testing.T, a *Account) {
		t.Helper()
		if a.Balance != b {
			t.Errorf("balance after fold = %d, want %d", a.Balance, b)
		}
	}
}

// ledgerModel is a few accounts next to a plain model of what their balances, items and
// grants must be, computed from the business rules alone. The property test and the fuzz test
// both drive commands against one and check the folded accounts against the model.
type ledgerModel struct {
	accts   []*Account
	balance []Coins
	items   []map[string]int64
	granted Coins
}

// open opens an account, welcome grant included, both as an account and in the model.
func (m *ledgerModel) open(t testing.TB, id uuid.UUID, username string) {
	t.Helper()
	events, err := OpenAccount(id, username)
	if err != nil {
		t.Fatal(err)
	}
	m.accts = append(m.accts, fold(t, events...))
	m.balance = append(m.balance, WelcomeGrant)
	m.items = append(m.items, map[string]int64{})
	m.granted += WelcomeGrant
}

// versions sums the accounts' versions: it moves by one for every event folded.
func (m *ledgerModel) versions() int64 {
	var v int64
	for _, a := range m.accts {
		v += a.Version
	}
	return v
}

// The business rules a command breaks, judged by the model alone: the oracle a command's
// refusal or acceptance is checked against. Several can be broken at once.

// grantRulesBroken lists the rules a grant of amount with reason to account actor breaks.
func (m *ledgerModel) grantRulesBroken(actor int, amount Coins, reason string) []error {
	var broken []error
	if !m.accts[actor].Opened() {
		broken = append(broken, ErrUnknownAccount)
	}
	if amount <= 0 {
		broken = append(broken, ErrInvalidAmount)
	} else if amount > MaxBalance-m.balance[actor] { // no overflow: 0 <= balance
		broken = append(broken, ErrAmountOverflow)
	}
	if strings.TrimSpace(reason) == "" || !utf8.ValidString(reason) || utf8.RuneCountInString(reason) > MaxReasonLength ||
		strings.IndexByte(reason, 0) >= 0 {
		broken = append(broken, ErrInvalidReason)
	}
	return broken
}

// sendRulesBroken lists the rules a transfer of amount from account actor to account recipient
// breaks; recipient -1 is a name no account has.
func (m *ledgerModel) sendRulesBroken(actor, recipient int, amount Coins) []error {
	var broken []error
	if !m.accts[actor].Opened() || recipient < 0 {
		broken = append(broken, ErrUnknownAccount)
	}
	if recipient == actor {
		broken = append(broken, ErrSelfTransfer)
	}
	if amount <= 0 {
		broken = append(broken, ErrInvalidAmount)
	} else {
		if amount > MaxBalance {
			broken = append(broken, ErrAmountOverflow)
		}
		if amount > m.balance[actor] {
			broken = append(broken, ErrInsufficientFunds)
		}
	}
	return broken
}

// buyRulesBroken lists the rules a purchase by account actor of an item breaks: known says
// whether the price list has the item, at price.
func (m *ledgerModel) buyRulesBroken(actor int, price Coins, known bool) []error {
	var broken []error
	if !m.accts[actor].Opened() {
		broken = append(broken, ErrUnknownAccount)
	}
	if !known {
		broken = append(broken, ErrUnknownItem)
	} else if price > m.balance[actor] {
		broken = append(broken, ErrInsufficientFunds)
	}
	return broken
}

// checkInvariants asserts the invariants: no negative balance, each account's own books
// balance, the accounts agree with the model, transfers conserve coins and Σ balances + Σ spent
// = Σ granted. Plain int64 sums cannot overflow here: every total stays below the number of
// commands × MaxBalance plus the welcome grants, and a value that wrapped around would first
// have differed from the model.
func (m *ledgerModel) checkInvariants(t testing.TB, step int) {
	t.Helper()
	var balances, spent, granted, sent, received Coins
	for i, a := range m.accts {
		if a.Balance < 0 {
			t.Fatalf("step %d: account %d %q has a negative balance %d", step, i, a.Username, a.Balance)
		}
		if a.Granted+a.Received != a.Balance+a.Sent+a.Spent {
			t.Fatalf("step %d: account %d %q: granted %d + received %d != balance %d + sent %d + spent %d",
				step, i, a.Username, a.Granted, a.Received, a.Balance, a.Sent, a.Spent)
		}
		if a.Balance != m.balance[i] {
			t.Fatalf("step %d: account %d %q balance %d, the model says %d", step, i, a.Username, a.Balance, m.balance[i])
		}
		if !maps.Equal(a.Items, m.items[i]) {
			t.Fatalf("step %d: account %d %q items %v, the model says %v", step, i, a.Username, a.Items, m.items[i])
		}
		balances += a.Balance
		spent += a.Spent
		granted += a.Granted
		sent += a.Sent
		received += a.Received
	}
	if balances+spent != granted {
		t.Fatalf("step %d: coins not conserved: Σ balance %d + Σ spent %d != Σ granted %d", step, balances, spent, granted)
	}
	if granted != m.granted {
		t.Fatalf("step %d: Σ granted %d, the model says %d", step, granted, m.granted)
	}
	if sent != received {
		t.Fatalf("step %d: Σ sent %d != Σ received %d", step, sent, received)
	}
}
