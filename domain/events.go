package domain

import (
	"github.com/google/uuid"
)

// Event types as stored in the event log. Renaming one breaks history: add, never rename.
const (
	TypeAccountOpened = "AccountOpened"
	TypeCoinsGranted  = "CoinsGranted"
	TypeCoinsSent     = "CoinsSent"
	TypeCoinsReceived = "CoinsReceived"
	TypeItemPurchased = "ItemPurchased"
)

// SchemaVersion is the payload schema version of every event type today.
const SchemaVersion = 1

// Event is a fact about one account.
type Event interface {
	// EventType is the type name stored with the event.
	EventType() string
}

// AccountRef names an account in events that involve two, so each stream replays on its own.
type AccountRef struct {
	ID       uuid.UUID `json:"id"`
	Username string    `json:"username"`
}

// AccountOpened starts every account stream.
type AccountOpened struct {
	AccountID uuid.UUID `json:"accountId"`
	Username  string    `json:"username"`
}

// CoinsGranted adds coins from outside the ledger: the welcome allowance or an admin's bonus.
type CoinsGranted struct {
	Amount    Coins  `json:"amount"`
	Reason    string `json:"reason"`
	GrantedBy string `json:"grantedBy,omitempty"`
}

// CoinsSent is the sender's half of a transfer.
type CoinsSent struct {
	TransferID uuid.UUID  `json:"transferId"`
	From       AccountRef `json:"from"`
	To         AccountRef `json:"to"`
	Amount     Coins      `json:"amount"`
}

// CoinsReceived is the recipient's half of a transfer.
type CoinsReceived struct {
	TransferID uuid.UUID  `json:"transferId"`
	From       AccountRef `json:"from"`
	To         AccountRef `json:"to"`
	Amount     Coins      `json:"amount"`
}

// ItemPurchased records a purchase at the price paid then; later price changes do not touch it.
type ItemPurchased struct {
	Item     string `json:"item"`
	Price    Coins  `json:"price"`
	Quantity int64  `json:"quantity"`
}

// EventType implements Event.
func (AccountOpened) EventType() string { return TypeAccountOpened }

// EventType implements Event.
func (CoinsGranted) EventType() string { return TypeCoinsGranted }

// EventType implements Event.
func (CoinsSent) EventType() string { return TypeCoinsSent }

// EventType implements Event.
func (CoinsReceived) EventType() string { return TypeCoinsReceived }

// EventType implements Event.
func (ItemPurchased) EventType() string { return TypeItemPurchased }

// BalanceChange is how e moves its account's balance: the rule that the balance read model and
// a reader folding an account's newest events share. Events reach them already validated by
// the aggregate, so the arithmetic is not checked again here.
func BalanceChange(e Event) Coins {
	switch e := e.(type) {
	case CoinsGranted:
		return e.Amount
	case CoinsReceived:
		return e.Amount
	case CoinsSent:
		return -e.Amount
	case ItemPurchased:
		return -e.Price * Coins(e.Quantity)
	}
	return 0
}
