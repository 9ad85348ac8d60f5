package domain

import (
	"encoding/binary"
	"errors"
	"maps"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// cmdReader hands out the fuzz input a piece at a time; past its end it reads zeros, so every
// input is a complete program.
type cmdReader struct{ b []byte }

func (r *cmdReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *cmdReader) int64() int64 {
	var buf [8]byte
	n := copy(buf[:], r.b)
	r.b = r.b[n:]
	return int64(binary.BigEndian.Uint64(buf[:]))
}

// amount draws an amount for an account holding balance, biased towards the edges the
// commands must get right: zero, negatives, exactly the balance and one past it, the grant cap
// and one past it, and the ends of int64.
func (r *cmdReader) amount(balance Coins) Coins {
	switch sel := r.byte(); sel % 16 {
	case 0:
		return Coins(r.byte())
	case 1:
		return balance
	case 2:
		return balance + 1
	case 3:
		return balance - 1
	case 4:
		return MaxBalance
	case 5:
		return MaxBalance + 1
	case 6:
		return MaxBalance - balance
	case 7:
		return MaxBalance - balance + 1
	case 8:
		return math.MaxInt64
	case 9:
		return math.MinInt64
	case 10:
		return 0
	case 11:
		return -Coins(r.byte())
	case 12:
		return Coins(r.int64())
	case 13:
		return Coins(r.byte())<<8 | Coins(r.byte())
	default:
		return 1 + Coins(r.byte())
	}
}

// The reasons and items a program can name: valid ones and each way of being invalid.
var (
	fuzzReasons = []string{"bonus", "", "   ", "\t", strings.Repeat("x", MaxReasonLength),
		strings.Repeat("é", MaxReasonLength+1), " padded ", "ok\xff", "nul\x00inside"}
	fuzzItems = []string{"t-shirt", "cup", "book", "pen", "powerbank", "hoody", "umbrella",
		"socks", "wallet", "pink-hoody", "yacht", "", "Cup", "pink hoody"}
)

// cmdLedger is a few accounts and their model. The last account is never opened: every
// command on it must be refused.
type cmdLedger struct {
	t       *testing.T
	catalog Catalog // what the commands are given
	prices  Catalog // the business's price list, for the model
	ledgerModel
}

func newCmdLedger(t *testing.T) *cmdLedger {
	l := &cmdLedger{t: t, catalog: storeCatalog(), prices: storeCatalog()}
	for _, ref := range []AccountRef{aliceRef, bobRef, carolRef} {
		l.open(t, ref.ID, ref.Username)
	}
	l.accts = append(l.accts, &Account{})
	l.balance = append(l.balance, 0)
	l.items = append(l.items, map[string]int64{})
	return l
}

// copyOf returns a deep copy of a as a value, to compare with later.
func copyOf(a *Account) Account {
	c := *a
	c.Items = maps.Clone(a.Items)
	return c
}

// same reports whether a is as its copy b was (cheaper than reflect, which would dominate the
// run time).
func same(a *Account, b Account) bool {
	return a.ID == b.ID && a.Username == b.Username && a.Version == b.Version && a.Balance == b.Balance &&
		a.Granted == b.Granted && a.Received == b.Received && a.Sent == b.Sent && a.Spent == b.Spent &&
		maps.Equal(a.Items, b.Items)
}

func (l *cmdLedger) fold(step, idx int, e Event) {
	if err := l.accts[idx].Apply(e); err != nil {
		l.t.Fatalf("step %d: decided event %#v does not fold into account %d: %v", step, e, idx, err)
	}
}

// maxSteps bounds a program, so that one input stays cheap however long it is; a few dozen
// commands reach every edge (the cap is one grant away).
const maxSteps = 64

// FuzzCommandSequence reads the input as a program of grants, transfers and purchases over a
// few accounts, decides each command on the current state and folds what it decides, the way
// the application does, and checks the invariants after every step. A command must be
// accepted exactly when it breaks no business rule, and refused with the error of a rule it
// breaks (several may be broken at once; which one is reported is not part of the contract).
func FuzzCommandSequence(f *testing.F) {
	// Each step is an opcode byte (low two bits: 0 grant, 1 and 3 send, 2 buy; the rest picks
	// the actor), then the command's own bytes: grant: amount, reason; send: recipient, amount;
	// buy: item. An amount is a selector byte and the bytes it consumes (see
	// cmdReader.amount).
	f.Add([]byte{})
	f.Add([]byte{0x00, 0x0e, 0x05, 0x00})                                     // grant alice 6 coins
	f.Add([]byte{0x00, 0x06, 0x00, 0x00, 0x0e, 0x00, 0x00})                   // grant up to the cap, then one coin more
	f.Add([]byte{0x00, 0x07, 0x00})                                           // grant one past the cap
	f.Add([]byte{0x01, 0x01, 0x01})                                           // alice sends bob her whole balance
	f.Add([]byte{0x01, 0x01, 0x02})                                           // one coin more than she has
	f.Add([]byte{0x01, 0x00, 0x0e, 0x01})                                     // alice sends herself coins
	f.Add([]byte{0x01, 0x03, 0x0e, 0x01})                                     // to an account nobody resolved
	f.Add([]byte{0x01, 0x01, 0x08, 0x01, 0x01, 0x09, 0x01, 0x01, 0x0a})       // MaxInt64, MinInt64, 0
	f.Add([]byte{0x0d, 0x00, 0x0e, 0x01, 0x0c, 0x0e, 0x01, 0x00, 0x0e, 0x00}) // the unopened account sends, is granted, buys
	f.Add([]byte{0x02, 0x09, 0x02, 0x09, 0x02, 0x0a, 0x02, 0x00})             // buy pink-hoody twice, an unknown item, a t-shirt
	// Alice to the cap and all of it to bob (a transfer may lift a balance past the cap), alice
	// to the cap again; bob cannot move more than the cap at once, nor alice be granted more.
	f.Add([]byte{0x00, 0x06, 0x00, 0x01, 0x01, 0x01, 0x00, 0x06, 0x00, 0x05, 0x00, 0x01, 0x00, 0x0e, 0x00})
	f.Add([]byte{0x01, 0x01, 0x0c, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) // a raw int64 amount

	f.Fuzz(runProgram)
}

// runProgram runs one program of FuzzCommandSequence.
func runProgram(t *testing.T, program []byte) {
	l := newCmdLedger(t)
	r := &cmdReader{b: program}
	n := len(l.accts)
	for step := 0; len(r.b) > 0 && step < maxSteps; step++ {
		op := r.byte()
		actor := int(op>>2) % n
		a := l.accts[actor]
		before, versions := copyOf(a), l.versions()

		var (
			kind   string
			events []Event
			err    error
			broken []error
			accept func()
		)
		switch op & 3 {
		case 0:
			kind = "grant"
			amount := r.amount(l.balance[actor])
			reason := fuzzReasons[int(r.byte())%len(fuzzReasons)]
			broken = l.grantRulesBroken(actor, amount, reason)
			events, err = a.Grant(amount, reason, "admin")
			accept = func() {
				want := []Event{CoinsGranted{Amount: amount, Reason: reason, GrantedBy: "admin"}}
				if !reflect.DeepEqual(events, want) {
					t.Fatalf("step %d: grant decided %#v, want %#v", step, events, want)
				}
				l.fold(step, actor, events[0])
				l.balance[actor] += amount
				l.granted += amount
				if l.accts[actor].Balance > MaxBalance {
					t.Fatalf("step %d: a grant lifted account %d to %d, above the cap", step, actor, l.accts[actor].Balance)
				}
			}
		case 1, 3:
			kind = "send"
			// The recipient is one of the opened accounts, or a name nobody resolved to an
			// account (the nil id). The application never hands an unopened account's id to
			// Send, so neither does this.
			recipient := int(r.byte()) % n
			var to AccountRef
			if recipient < n-1 {
				to = l.accts[recipient].Ref()
			} else {
				recipient = -1
				to = AccountRef{Username: "ghost"}
			}
			amount := r.amount(l.balance[actor])
			broken = l.sendRulesBroken(actor, recipient, amount)
			tid := uuid.UUID{0x7a, byte(step >> 8), byte(step)}
			sent, recv, serr := a.Send(to, amount, tid)
			err = serr
			if err == nil || sent != (CoinsSent{}) || recv != (CoinsReceived{}) {
				events = []Event{sent, recv}
			}
			accept = func() {
				from := a.Ref()
				want := []Event{
					CoinsSent{TransferID: tid, From: from, To: to, Amount: amount},
					CoinsReceived{TransferID: tid, From: from, To: to, Amount: amount},
				}
				if !reflect.DeepEqual(events, want) {
					t.Fatalf("step %d: send decided %#v, want %#v", step, events, want)
				}
				l.fold(step, actor, sent)
				l.fold(step, recipient, recv)
				l.balance[actor] -= amount
				l.balance[recipient] += amount
			}
		case 2:
			kind = "buy"
			item := fuzzItems[int(r.byte())%len(fuzzItems)]
			price, known := l.prices[item]
			broken = l.buyRulesBroken(actor, price, known)
			events, err = a.Buy(item, l.catalog)
			accept = func() {
				want := []Event{ItemPurchased{Item: item, Price: price, Quantity: 1}}
				if !reflect.DeepEqual(events, want) {
					t.Fatalf("step %d: buy decided %#v, want %#v", step, events, want)
				}
				l.fold(step, actor, events[0])
				l.balance[actor] -= price
				l.items[actor][item]++
			}
		}

		// Deciding never changes the account, whatever the outcome (and the command is given no
		// other account to change).
		if !same(a, before) {
			t.Fatalf("step %d: deciding %s changed the account", step, kind)
		}
		switch {
		case err == nil && len(broken) > 0:
			t.Fatalf("step %d: %s accepted (%#v), but it breaks %v", step, kind, events, broken)
		case err != nil && len(broken) == 0:
			t.Fatalf("step %d: %s refused with %v, but it breaks no rule", step, kind, err)
		case err != nil:
			if events != nil {
				t.Fatalf("step %d: refused %s came with events %#v", step, kind, events)
			}
			matched := false
			for _, s := range allSentinels {
				if !errors.Is(err, s) {
					continue
				}
				allowed := false
				for _, b := range broken {
					allowed = allowed || b == s
				}
				if !allowed {
					t.Fatalf("step %d: %s refused with %v, which matches %v; the broken rules are %v", step, kind, err, s, broken)
				}
				matched = true
			}
			if !matched {
				t.Fatalf("step %d: %s refused with %v, which is no domain error; want one of %v", step, kind, err, broken)
			}
		default:
			accept()
			if moved := l.versions() - versions; moved != int64(len(events)) {
				t.Fatalf("step %d: %s decided %d events but the versions moved by %d", step, kind, len(events), moved)
			}
		}
		l.checkInvariants(t, step)
	}
}
