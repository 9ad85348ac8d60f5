// Package domain is the ledger's business core, free of I/O: the account aggregate, the
// events it is folded from, the money type, and the command functions that decide which
// events a request produces or which domain error refuses it. State changes only by folding
// events (Apply); commands never mutate.
package domain

import (
	"fmt"
	"maps"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// MaxUsernameLength is the longest username, in characters.
const MaxUsernameLength = 64

// MaxReasonLength is the longest grant reason, in characters.
const MaxReasonLength = 200

// StreamID is the event stream of the account with the given id.
func StreamID(id uuid.UUID) string { return StreamPrefix + id.String() }

// StreamPrefix starts the id of every account's stream.
const StreamPrefix = "account-"

// AccountOf returns the account whose event stream is streamID; false if it is not an
// account's stream.
func AccountOf(streamID string) (uuid.UUID, bool) {
	rest, ok := strings.CutPrefix(streamID, StreamPrefix)
	if !ok {
		return uuid.UUID{}, false
	}
	id, err := uuid.Parse(rest)
	return id, err == nil
}

// ValidateUsername checks a username: 1 to 64 characters of valid UTF-8, no control
// characters, no leading or trailing white space.
func ValidateUsername(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidUsername)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidUsername)
	case utf8.RuneCountInString(name) > MaxUsernameLength:
		return fmt.Errorf("%w: longer than %d characters", ErrInvalidUsername, MaxUsernameLength)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("%w: leading or trailing white space", ErrInvalidUsername)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: control characters", ErrInvalidUsername)
	}
	return nil
}

// Account is the aggregate: the folded state of one account's stream.
type Account struct {
	ID       uuid.UUID        `json:"id"`
	Username string           `json:"username"`
	Version  int64            `json:"version"`
	Balance  Coins            `json:"balance"`
	Items    map[string]int64 `json:"items,omitempty"`
	// Running totals, kept for audits and the bank invariant (granted + received = balance + sent + spent).
	Granted  Coins `json:"granted"`
	Received Coins `json:"received"`
	Sent     Coins `json:"sent"`
	Spent    Coins `json:"spent"`
}

// Opened reports whether the account exists (its stream starts with AccountOpened).
func (a *Account) Opened() bool { return a.Version > 0 }

// Ref names the account in events that involve another one.
func (a *Account) Ref() AccountRef { return AccountRef{ID: a.ID, Username: a.Username} }

// Clone returns a deep copy, so a command can fold its events without touching the original.
func (a *Account) Clone() *Account {
	c := *a
	c.Items = maps.Clone(a.Items)
	return &c
}

// Apply folds one event into the account and advances its version. It refuses events that do
// not belong (wrong first event, another account's transfer half, a negative amount,
// arithmetic out of range, a balance below zero) instead of folding them into a wrong
// balance; a refused event leaves the account exactly as it was.
func (a *Account) Apply(e Event) error {
	if e == nil {
		return fmt.Errorf("%w: nil event at version %d", ErrCorruptHistory, a.Version+1)
	}
	if !a.Opened() {
		o, ok := e.(AccountOpened)
		if !ok {
			return fmt.Errorf("%w: stream starts with %s, not %s", ErrCorruptHistory, e.EventType(), TypeAccountOpened)
		}
		a.ID, a.Username = o.AccountID, o.Username
		a.Version = 1
		return nil
	}
	next, err := a.fold(e)
	if err != nil {
		return fmt.Errorf("%w: %s at version %d: %v", ErrCorruptHistory, e.EventType(), a.Version+1, err)
	}
	next.Version++
	*a = *next
	return nil
}

// fold returns the state after e, computed on a copy so that a refusal changes nothing.
func (a *Account) fold(e Event) (*Account, error) {
	n := a.Clone()
	var err error
	switch e := e.(type) {
	case AccountOpened:
		return nil, fmt.Errorf("the account is already open")
	case CoinsGranted:
		if e.Amount <= 0 {
			return nil, fmt.Errorf("amount %d is not positive", e.Amount)
		}
		if n.Balance, err = n.Balance.Add(e.Amount); err == nil {
			n.Granted, err = n.Granted.Add(e.Amount)
		}
	case CoinsSent:
		if e.From.ID != a.ID {
			return nil, fmt.Errorf("sent by account %s, not this one", e.From.ID)
		}
		if e.Amount <= 0 {
			return nil, fmt.Errorf("amount %d is not positive", e.Amount)
		}
		if n.Balance, err = n.Balance.Sub(e.Amount); err == nil {
			n.Sent, err = n.Sent.Add(e.Amount)
		}
	case CoinsReceived:
		if e.To.ID != a.ID {
			return nil, fmt.Errorf("received by account %s, not this one", e.To.ID)
		}
		if e.Amount <= 0 {
			return nil, fmt.Errorf("amount %d is not positive", e.Amount)
		}
		if n.Balance, err = n.Balance.Add(e.Amount); err == nil {
			n.Received, err = n.Received.Add(e.Amount)
		}
	case ItemPurchased:
		if e.Quantity <= 0 || e.Price < 0 {
			return nil, fmt.Errorf("%d at %d is not a purchase", e.Quantity, e.Price)
		}
		var cost Coins
		if cost, err = e.Price.Times(e.Quantity); err == nil {
			if n.Balance, err = n.Balance.Sub(cost); err == nil {
				n.Spent, err = n.Spent.Add(cost)
			}
		}
		if err == nil {
			if n.Items == nil {
				n.Items = make(map[string]int64)
			}
			n.Items[e.Item] += e.Quantity
		}
	default:
		return nil, fmt.Errorf("unknown event %T", e)
	}
	if err != nil {
		return nil, err
	}
	if n.Balance < 0 {
		return nil, fmt.Errorf("balance would be %d", n.Balance)
	}
	return n, nil
}

// ApplyAll folds events in order.
func (a *Account) ApplyAll(events []Event) error {
	for _, e := range events {
		if err := a.Apply(e); err != nil {
			return err
		}
	}
	return nil
}

// OpenAccount decides the events that open an account with the welcome allowance.
func OpenAccount(id uuid.UUID, username string) ([]Event, error) {
	if err := ValidateUsername(username); err != nil {
		return nil, err
	}
	if id == uuid.Nil {
		return nil, fmt.Errorf("%w: nil account id", ErrUnknownAccount)
	}
	return []Event{
		AccountOpened{AccountID: id, Username: username},
		CoinsGranted{Amount: WelcomeGrant, Reason: "welcome"},
	}, nil
}

// Grant decides an admin's bonus to this account.
func (a *Account) Grant(amount Coins, reason, grantedBy string) ([]Event, error) {
	if !a.Opened() {
		return nil, ErrUnknownAccount
	}
	if amount <= 0 {
		return nil, fmt.Errorf("%w, got %d", ErrInvalidAmount, amount)
	}
	if strings.TrimSpace(reason) == "" || utf8.RuneCountInString(reason) > MaxReasonLength || !utf8.ValidString(reason) {
		return nil, fmt.Errorf("%w: 1 to %d characters", ErrInvalidReason, MaxReasonLength)
	}
	if strings.IndexByte(reason, 0) >= 0 {
		// The message does not quote the reason: refusals are stored as text, which cannot hold NUL.
		return nil, fmt.Errorf("%w: must not contain a NUL character", ErrInvalidReason)
	}
	if after, err := a.Balance.Add(amount); err != nil || after > MaxBalance {
		return nil, fmt.Errorf("%w: a balance of %d plus %d is above the maximum of %d", ErrAmountOverflow, a.Balance, amount, MaxBalance)
	}
	return []Event{CoinsGranted{Amount: amount, Reason: reason, GrantedBy: grantedBy}}, nil
}

// Send decides a transfer from this account. It returns the sender's and the recipient's
// halves, which must be appended together.
func (a *Account) Send(to AccountRef, amount Coins, transferID uuid.UUID) (CoinsSent, CoinsReceived, error) {
	if !a.Opened() {
		return CoinsSent{}, CoinsReceived{}, ErrUnknownAccount
	}
	if to.ID == uuid.Nil {
		return CoinsSent{}, CoinsReceived{}, ErrUnknownAccount
	}
	if to.ID == a.ID {
		return CoinsSent{}, CoinsReceived{}, ErrSelfTransfer
	}
	if amount <= 0 {
		return CoinsSent{}, CoinsReceived{}, fmt.Errorf("%w, got %d", ErrInvalidAmount, amount)
	}
	if amount > MaxBalance {
		return CoinsSent{}, CoinsReceived{}, fmt.Errorf("%w: %d", ErrAmountOverflow, amount)
	}
	if a.Balance < amount {
		return CoinsSent{}, CoinsReceived{}, fmt.Errorf("%w: balance %d, transfer %d", ErrInsufficientFunds, a.Balance, amount)
	}
	from := a.Ref()
	return CoinsSent{TransferID: transferID, From: from, To: to, Amount: amount},
		CoinsReceived{TransferID: transferID, From: from, To: to, Amount: amount}, nil
}

// Buy decides the purchase of one item at its catalog price.
func (a *Account) Buy(item string, catalog Catalog) ([]Event, error) {
	if !a.Opened() {
		return nil, ErrUnknownAccount
	}
	price, err := catalog.Price(item)
	if err != nil {
		return nil, err
	}
	if a.Balance < price {
		return nil, fmt.Errorf("%w: balance %d, %s costs %d", ErrInsufficientFunds, a.Balance, item, price)
	}
	return []Event{ItemPurchased{Item: item, Price: price, Quantity: 1}}, nil
}

// Catalog maps item names to prices.
type Catalog map[string]Coins

// Price returns the price of item, or ErrUnknownItem.
func (c Catalog) Price(item string) (Coins, error) {
	p, ok := c[item]
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknownItem, item)
	}
	return p, nil
}
