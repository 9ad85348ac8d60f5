package domain

import "errors"

// Domain errors. Each is distinct so that callers can tell them apart with errors.Is and map
// each to the right answer in exactly one place.
var (
	// ErrInsufficientFunds: the account's balance does not cover a purchase or transfer.
	ErrInsufficientFunds = errors.New("not enough coin")
	// ErrUnknownItem: the item is not in the catalog.
	ErrUnknownItem = errors.New("unknown item")
	// ErrSelfTransfer: sender and recipient are the same account.
	ErrSelfTransfer = errors.New("cannot send coins to yourself")
	// ErrUnknownAccount: no account with that name or id exists.
	ErrUnknownAccount = errors.New("unknown account")
	// ErrAccountExists: the account was opened already.
	ErrAccountExists = errors.New("account already exists")
	// ErrInvalidUsername: a username breaks the naming rules.
	ErrInvalidUsername = errors.New("invalid username")
	// ErrInvalidReason: a grant's reason is missing or too long.
	ErrInvalidReason = errors.New("invalid reason")
	// ErrCorruptHistory: the events of a stream cannot be folded (a gap, a foreign event, an
	// unknown type). It means a bug or tampering, never bad client input.
	ErrCorruptHistory = errors.New("corrupt account history")
)
