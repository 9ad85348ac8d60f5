package domain

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// ledgerSim drives random commands against a set of accounts the way the application does:
// decide on the current folded state, then fold the decided events into the streams they
// belong to. Next to the accounts it keeps a plain model of balances and items, computed from
// the business rules alone, as an oracle.
type ledgerSim struct {
	t         *testing.T
	rng       *rand.Rand
	catalog   Catalog  // what the commands are given
	oracle    Catalog  // the business's price list, for the model
	itemNames []string // catalog items plus unknown ones
	ledgerModel

	stats map[string]int
}

func newLedgerSim(t *testing.T, seed uint64, n int) *ledgerSim {
	s := &ledgerSim{
		t:       t,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		catalog: storeCatalog(),
		oracle:  storeCatalog(),
		stats:   map[string]int{},
	}
	for item := range s.catalog {
		s.itemNames = append(s.itemNames, item)
	}
	slices.Sort(s.itemNames) // map order must not leak into a seeded run
	s.itemNames = append(s.itemNames, "yacht", "", "Cup", "pink hoody")

	seen := map[uuid.UUID]bool{}
	for i := range n {
		var id uuid.UUID
		for id == uuid.Nil || seen[id] {
			for j := range id {
				id[j] = byte(s.rng.Uint32())
			}
		}
		seen[id] = true
		s.open(t, id, fmt.Sprintf("user-%02d", i))
	}
	return s
}

// violations is the set of domain errors a command may be refused with; empty means it must
// succeed. Several rules can be broken at once and the order they are checked in is not part
// of the contract, so any of them is accepted.
type violations []error

func (v violations) allows(err error) bool {
	for _, w := range v {
		if errors.Is(err, w) {
			return true
		}
	}
	return false
}

func (s *ledgerSim) amount(balance Coins) Coins {
	r := s.rng
	switch r.IntN(12) {
	case 0, 1, 2, 3:
		return Coins(r.Int64N(int64(balance) + 1)) // may be 0
	case 4:
		return balance
	case 5:
		return balance + 1 + Coins(r.Int64N(100))
	case 6:
		return -Coins(r.Int64N(1000))
	case 7:
		return []Coins{MaxBalance, MaxBalance + 1, math.MaxInt64, math.MinInt64, -1}[r.IntN(5)]
	default:
		return 1 + Coins(r.Int64N(300))
	}
}

func (s *ledgerSim) step(i int) {
	t, r := s.t, s.rng
	n := len(s.accts)
	actor := r.IntN(n)
	a := s.accts[actor]
	before := a.Clone()
	versions := s.versions()

	var (
		kind   string
		events []Event
		err    error
		broken violations
		apply  func()
	)
	switch c := r.IntN(100); {
	case c < 45:
		kind = "buy"
		item := s.itemNames[r.IntN(len(s.itemNames))]
		price, known := s.oracle[item]
		broken = s.buyRulesBroken(actor, price, known)
		events, err = a.Buy(item, s.catalog)
		apply = func() {
			want := []Event{ItemPurchased{Item: item, Price: price, Quantity: 1}}
			if !reflect.DeepEqual(events, want) {
				t.Fatalf("step %d: buy %q decided %#v, want %#v", i, item, events, want)
			}
			s.fold(actor, events...)
			s.balance[actor] -= price
			s.items[actor][item]++
		}
	case c < 85:
		kind = "send"
		var to AccountRef
		recipient := -1
		switch k := r.IntN(20); {
		case k == 0:
			to = AccountRef{Username: "ghost"}
		case k == 1:
			recipient = actor
			to = s.accts[actor].Ref()
		default:
			recipient = r.IntN(n) // may be the actor too
			to = s.accts[recipient].Ref()
		}
		amount := s.amount(s.balance[actor])
		broken = s.sendRulesBroken(actor, recipient, amount)
		tid := uuid.UUID{byte(i), byte(i >> 8), 0x7a}
		var sent CoinsSent
		var recv CoinsReceived
		sent, recv, err = a.Send(to, amount, tid)
		if err == nil {
			events = []Event{sent, recv}
		} else if sent != (CoinsSent{}) || recv != (CoinsReceived{}) {
			events = []Event{sent, recv}
		}
		apply = func() {
			from := s.accts[actor].Ref()
			want := []Event{
				CoinsSent{TransferID: tid, From: from, To: to, Amount: amount},
				CoinsReceived{TransferID: tid, From: from, To: to, Amount: amount},
			}
			if !reflect.DeepEqual(events, want) {
				t.Fatalf("step %d: send decided %#v, want %#v", i, events, want)
			}
			s.fold(actor, sent)
			s.fold(recipient, recv)
			s.balance[actor] -= amount
			s.balance[recipient] += amount
		}
	default:
		kind = "grant"
		reasons := []string{"bonus", "", "   ", "\t", strings.Repeat("x", 200), strings.Repeat("é", 201), " padded ", "ok\xff"}
		reason := reasons[r.IntN(len(reasons))]
		var amount Coins
		switch k := r.IntN(20); {
		case k == 0:
			amount = 0
		case k == 1:
			amount = -Coins(1 + r.Int64N(100))
		case k == 2:
			amount = []Coins{math.MaxInt64, MaxBalance, MaxBalance + 1, math.MinInt64}[r.IntN(4)]
		case k == 3:
			amount = MaxBalance - s.balance[actor] + Coins(r.Int64N(2)) // the cap, or one past it
		default:
			amount = 1 + Coins(r.Int64N(500))
		}
		broken = s.grantRulesBroken(actor, amount, reason)
		events, err = a.Grant(amount, reason, "admin")
		apply = func() {
			want := []Event{CoinsGranted{Amount: amount, Reason: reason, GrantedBy: "admin"}}
			if !reflect.DeepEqual(events, want) {
				t.Fatalf("step %d: grant decided %#v, want %#v", i, events, want)
			}
			s.fold(actor, events...)
			s.balance[actor] += amount
			s.granted += amount
		}
	}

	if !reflect.DeepEqual(a, before) {
		t.Fatalf("step %d: %s mutated the account while deciding", i, kind)
	}
	switch {
	case len(broken) == 0 && err != nil:
		t.Fatalf("step %d: %s refused with %v, but no rule is broken", i, kind, err)
	case len(broken) > 0 && err == nil:
		t.Fatalf("step %d: %s accepted (%#v), but it breaks %v", i, kind, events, broken)
	case err != nil:
		if !broken.allows(err) {
			t.Fatalf("step %d: %s refused with %v, want one of %v", i, kind, err, broken)
		}
		if events != nil {
			t.Fatalf("step %d: refused %s came with events %#v", i, kind, events)
		}
		s.stats[kind+" refused"]++
		// Refused commands change nothing.
		if !reflect.DeepEqual(s.accts[actor], before) || s.versions() != versions {
			t.Fatalf("step %d: refused %s changed the ledger", i, kind)
		}
	default:
		apply()
		s.stats[kind+" ok"]++
		if s.versions() == versions {
			t.Fatalf("step %d: accepted %s changed nothing", i, kind)
		}
	}
	s.checkInvariants(t, i)
}

func (s *ledgerSim) fold(idx int, events ...Event) {
	s.t.Helper()
	if err := s.accts[idx].ApplyAll(events); err != nil {
		s.t.Fatalf("folding decided events %#v into %s: %v", events, s.accts[idx].Username, err)
	}
}

func TestLedgerPropertyRandomCommands(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 20240607, 0xdecafbad} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newLedgerSim(t, seed, 50)
			for i := range 10_000 {
				s.step(i)
			}
			// Make sure the run exercised both outcomes of every command.
			for _, k := range []string{"buy ok", "buy refused", "send ok", "send refused", "grant ok", "grant refused"} {
				if s.stats[k] < 50 {
					t.Errorf("only %d %q in 10000 steps: the generator is too narrow (%v)", s.stats[k], k, s.stats)
				}
			}
			t.Logf("seed %d: %v", seed, s.stats)
		})
	}
}
