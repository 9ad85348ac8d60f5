package console

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
)

// accountHistory is what the account page keeps of one pass over the account's stream: every
// link of its hash chain checked, the balance after each event, and the changes the chart
// draws. It keeps no event: the page's rows of the table are read again, fifty at most.
type accountHistory struct {
	changes []change
	// after is the balance after each event read, in version order.
	after []versionBalance
	// firstBreak is the version of the first event whose link does not hold (0: none), and
	// problems says what is wrong with each event that breaks the chain itself.
	firstBreak int64
	problems   map[int64]string
	prev       []byte // the stored hash of the last event read
}

type versionBalance struct{ version, balance int64 }

// read goes on through the stream after the last event read, up to the version through (0: to
// the stream's head).
func (h *accountHistory) read(ctx context.Context, l Ledger, id uuid.UUID, through int64) error {
	from := h.last()
	limit := 0
	if through > 0 {
		if limit = int(through - from); limit <= 0 {
			return nil
		}
	}
	return l.ReadAccountEvents(ctx, id, from, limit, h.add)
}

// last returns the version of the last event read, 0 before the first.
func (h *accountHistory) last() int64 {
	if len(h.after) == 0 {
		return 0
	}
	return h.after[len(h.after)-1].version
}

// add checks the event's link of the chain (the versions follow each other, and its stored
// hash is the hash of the event and the one before: the full check, every time) and folds its
// change into the balance.
func (h *accountHistory) add(e *eventstore.RecordedEvent) {
	var balance int64
	if len(h.after) > 0 {
		balance = h.after[len(h.after)-1].balance
	}
	if n := int64(len(h.after)); e.Version != n+1 {
		h.breaks(e.Version, fmt.Sprintf("version %d follows %d", e.Version, n))
	} else if brk := eventstore.VerifyLink(h.prev, *e); brk != nil {
		h.breaks(e.Version, brk.Reason)
	}
	h.prev = append(h.prev[:0], e.Hash...)
	// An event that cannot be decoded changes nothing here; its row in the table says why.
	if ev, err := e.Decode(); err == nil {
		if amount, with := effect(ev); amount != 0 {
			balance += amount
			h.changes = append(h.changes, change{Version: e.Version, At: e.RecordedAt, Type: e.Type, Amount: amount,
				Balance: balance, Counterparty: with})
		}
	}
	h.after = append(h.after, versionBalance{e.Version, balance})
}

func (h *accountHistory) breaks(version int64, problem string) {
	if h.firstBreak == 0 {
		h.firstBreak = version
	}
	if h.problems == nil {
		h.problems = make(map[int64]string)
	}
	h.problems[version] = problem
}

// upTo forgets the events after version v: the page shows the account as its answer does.
func (h *accountHistory) upTo(v int64) {
	i, _ := slices.BinarySearchFunc(h.after, v+1, func(b versionBalance, v int64) int { return cmp.Compare(b.version, v) })
	h.after = h.after[:i]
	i, _ = slices.BinarySearchFunc(h.changes, v+1, func(c change, v int64) int { return cmp.Compare(c.Version, v) })
	h.changes = h.changes[:i]
	if h.firstBreak > v {
		h.firstBreak = 0
	}
	for version := range h.problems {
		if version > v {
			delete(h.problems, version)
		}
	}
}

// holds reports whether the chain holds up to and including version v.
func (h *accountHistory) holds(v int64) bool { return h.firstBreak == 0 || v < h.firstBreak }

// balance returns the balance after version v, and whether v was read.
func (h *accountHistory) balance(v int64) (int64, bool) {
	i, ok := slices.BinarySearchFunc(h.after, v, func(b versionBalance, v int64) int { return cmp.Compare(b.version, v) })
	if !ok {
		return 0, false
	}
	return h.after[i].balance, true
}
