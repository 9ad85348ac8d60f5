package domain

import (
	"encoding/json"
	"fmt"

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

// DecodeEvent turns a stored event back into its type.
func DecodeEvent(eventType string, schemaVersion int, payload []byte) (Event, error) {
	if e, ok := fastDecode(eventType, schemaVersion, payload); ok {
		return e, nil
	}
	return decodeJSON(eventType, schemaVersion, payload)
}

// decodeJSON decodes with encoding/json: the definition of every payload, and the path of
// whatever the fast reader does not take.
func decodeJSON(eventType string, schemaVersion int, payload []byte) (Event, error) {
	if schemaVersion != SchemaVersion {
		return nil, fmt.Errorf("%w: %s schema version %d", ErrCorruptHistory, eventType, schemaVersion)
	}
	var e Event
	var err error
	switch eventType {
	case TypeAccountOpened:
		e, err = decode[AccountOpened](payload)
	case TypeCoinsGranted:
		e, err = decode[CoinsGranted](payload)
	case TypeCoinsSent:
		e, err = decode[CoinsSent](payload)
	case TypeCoinsReceived:
		e, err = decode[CoinsReceived](payload)
	case TypeItemPurchased:
		e, err = decode[ItemPurchased](payload)
	default:
		return nil, fmt.Errorf("%w: unknown event type %q", ErrCorruptHistory, eventType)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s payload: %v", ErrCorruptHistory, eventType, err)
	}
	return e, nil
}

func decode[T Event](payload []byte) (Event, error) {
	var v T
	err := json.Unmarshal(payload, &v)
	return v, err
}

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
