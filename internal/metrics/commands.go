package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/httpapi"
	"github.com/ledger/ledger/internal/app"
)

// Command outcomes.
const (
	outcomeOK      = "ok"
	outcomeRefused = "refused"
	outcomeBusy    = "busy"
	outcomeError   = "error"
	// A command whose request ran out of its deadline (timeout) or whose client went away
	// (canceled) is neither refused nor failed: counted apart, it does not inflate the errors.
	outcomeTimeout  = "timeout"
	outcomeCanceled = "canceled"
)

// Command names, as the command label spells them.
const (
	cmdOpenAccount = "open_account"
	cmdBuy         = "buy"
	cmdTransfer    = "transfer"
	cmdGrant       = "grant"
)

var commandNames = []string{cmdOpenAccount, cmdBuy, cmdTransfer, cmdGrant}

// refusals are the domain errors a command can be refused with, each with its reason label.
// Anything else but ErrBusy, a deadline or a cancellation is an error: a bug, a database failure.
var refusals = []struct {
	err    error
	reason string
}{
	{domain.ErrInsufficientFunds, "insufficient_funds"},
	{domain.ErrUnknownItem, "unknown_item"},
	{domain.ErrSelfTransfer, "self_transfer"},
	{domain.ErrUnknownAccount, "unknown_account"},
	{domain.ErrAccountExists, "account_exists"},
	{domain.ErrInvalidAmount, "invalid_amount"},
	{domain.ErrAmountOverflow, "amount_overflow"},
	{domain.ErrInvalidUsername, "invalid_username"},
	{domain.ErrInvalidReason, "invalid_reason"},
}

// outcomeOf classifies a command's error.
func outcomeOf(err error) (outcome, reason string) {
	if err == nil {
		return outcomeOK, ""
	}
	if errors.Is(err, app.ErrBusy) {
		return outcomeBusy, ""
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return outcomeTimeout, ""
	}
	if errors.Is(err, context.Canceled) {
		return outcomeCanceled, ""
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return outcomeRefused, r.reason
		}
	}
	return outcomeError, ""
}

func (m *Metrics) observeCommand(command string, start time.Time, err error) {
	outcome, reason := outcomeOf(err)
	m.commands.WithLabelValues(command, outcome, reason).Inc()
	m.commandDuration.WithLabelValues(command, outcome).Observe(time.Since(start).Seconds())
}

// Ledger is the application layer with its commands counted by outcome and timed. Queries and
// everything else the App offers (the audit endpoints find it by interface) pass through
// unchanged.
type Ledger struct {
	*app.App
	m *Metrics
}

var (
	_ httpapi.Ledger  = (*Ledger)(nil)
	_ httpapi.Auditor = (*Ledger)(nil)
)

// Ledger returns a, measured.
func (m *Metrics) Ledger(a *app.App) *Ledger { return &Ledger{App: a, m: m} }

// OpenAccount opens an account, measured.
func (l *Ledger) OpenAccount(ctx context.Context, username, passwordHash string) (uuid.UUID, app.Result, error) {
	start := time.Now()
	id, res, err := l.App.OpenAccount(ctx, username, passwordHash)
	l.m.observeCommand(cmdOpenAccount, start, err)
	return id, res, err
}

// Buy buys an item, measured.
func (l *Ledger) Buy(ctx context.Context, accountID uuid.UUID, item string) (app.Result, error) {
	start := time.Now()
	res, err := l.App.Buy(ctx, accountID, item)
	l.m.observeCommand(cmdBuy, start, err)
	return res, err
}

// Transfer sends coins, measured.
func (l *Ledger) Transfer(ctx context.Context, fromID uuid.UUID, toUser string, amount domain.Coins) (app.Result, error) {
	start := time.Now()
	res, err := l.App.Transfer(ctx, fromID, toUser, amount)
	l.m.observeCommand(cmdTransfer, start, err)
	return res, err
}

// Grant grants coins, measured.
func (l *Ledger) Grant(ctx context.Context, admin, toUser string, amount domain.Coins, reason string) (app.Result, error) {
	start := time.Now()
	res, err := l.App.Grant(ctx, admin, toUser, amount, reason)
	l.m.observeCommand(cmdGrant, start, err)
	return res, err
}
