package app_test

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/projections"
)

// TestBankInvariants drives random commands (valid and invalid) at a set of accounts, then
// checks that the event log balances and that every read model and every Info answer equals
// the fold of the log.
func TestBankInvariants(t *testing.T) {
	// The sequential run builds the read models from the backlog after the commands (catch-up);
	// the concurrent one has the projectors follow the traffic live.
	for _, tc := range []struct {
		name         string
		workers      int
		liveProjects bool
	}{{"sequential", 1, false}, {"32 workers", 32, true}} {
		t.Run(tc.name, func(t *testing.T) { runBank(t, tc.workers, tc.liveProjects, 50, 10_000) })
	}
}

// bankOp is the kind of one random command; each kind allows its own set of outcomes.
type bankOp int

const (
	opBuy bankOp = iota
	opBuyUnknownItem
	opTransfer
	opTransferSelf
	opTransferUnknown
	opGrant
	opGrantUnknown
	numBankOps
)

var bankOpNames = [numBankOps]string{"buy", "buy unknown item", "transfer", "transfer to self",
	"transfer to unknown user", "grant", "grant to unknown user"}

// bankItems are the catalog's items plus ones it does not sell.
var (
	knownItems   = []string{"t-shirt", "cup", "book", "pen", "powerbank", "hoody", "umbrella", "socks", "wallet", "pink-hoody"}
	unknownItems = []string{"yacht", "", "PEN", "pen ", "t-shirt'; DROP TABLE events; --"}
)

// outcome names how a command ended.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, domain.ErrInsufficientFunds):
		return "not enough coin"
	case errors.Is(err, domain.ErrUnknownItem):
		return "unknown item"
	case errors.Is(err, domain.ErrSelfTransfer):
		return "self transfer"
	case errors.Is(err, domain.ErrUnknownAccount):
		return "unknown account"
	case errors.Is(err, app.ErrBusy):
		return "busy"
	}
	return "unexpected"
}

// allowed lists the outcomes each kind of command may have.
var allowed = [numBankOps][]string{
	opBuy:             {"ok", "not enough coin", "busy"},
	opBuyUnknownItem:  {"unknown item"},
	opTransfer:        {"ok", "not enough coin", "busy"},
	opTransferSelf:    {"self transfer"},
	opTransferUnknown: {"unknown account"},
	opGrant:           {"ok", "busy"},
	opGrantUnknown:    {"unknown account"},
}

func pickOp(r *rand.Rand) bankOp {
	switch n := r.IntN(100); {
	case n < 40:
		return opBuy
	case n < 44:
		return opBuyUnknownItem
	case n < 86:
		return opTransfer
	case n < 89:
		return opTransferSelf
	case n < 92:
		return opTransferUnknown
	case n < 99:
		return opGrant
	default:
		return opGrantUnknown
	}
}

func runBank(t *testing.T, workers int, liveProjectors bool, accounts, commands int) {
	l := start(t, liveProjectors, app.Config{})
	ctx := context.Background()
	names, ids := openAccounts(t, l.app, "emp", accounts, min(workers, 8))

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var (
		next     atomic.Int64
		mu       sync.Mutex
		counts   [numBankOps]map[string]int
		failures int
	)
	for i := range counts {
		counts[i] = map[string]int{}
	}
	var wg sync.WaitGroup
	began := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for next.Add(1) <= int64(commands) {
				op := pickOp(r)
				from := r.IntN(accounts)
				var err error
				switch op {
				case opBuy:
					_, err = l.app.Buy(ctx, ids[from], knownItems[r.IntN(len(knownItems))])
				case opBuyUnknownItem:
					_, err = l.app.Buy(ctx, ids[from], unknownItems[r.IntN(len(unknownItems))])
				case opTransfer:
					to := (from + 1 + r.IntN(accounts-1)) % accounts
					_, err = l.app.Transfer(ctx, ids[from], names[to], domain.Coins(1+r.IntN(60)))
				case opTransferSelf:
					_, err = l.app.Transfer(ctx, ids[from], names[from], domain.Coins(1+r.IntN(60)))
				case opTransferUnknown:
					_, err = l.app.Transfer(ctx, ids[from], "nobody-"+names[from], domain.Coins(1+r.IntN(60)))
				case opGrant:
					_, err = l.app.Grant(ctx, "admin", names[from], domain.Coins(1+r.IntN(300)), "bonus")
				case opGrantUnknown:
					_, err = l.app.Grant(ctx, "admin", "ghost-"+names[from], 10, "bonus")
				}
				o := outcome(err)
				mu.Lock()
				counts[op][o]++
				bad := !slices.Contains(allowed[op], o)
				if bad {
					failures++
				}
				report := bad && failures <= 10
				mu.Unlock()
				if report {
					t.Errorf("%s: outcome %q (%v), allowed %v", bankOpNames[op], o, err, allowed[op])
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(began)
	for op := range numBankOps {
		t.Logf("%-24s %v", bankOpNames[op], counts[op])
	}
	t.Logf("%d commands by %d workers in %v (%.0f/s); app %+v; store %+v", commands, workers,
		elapsed.Round(time.Millisecond), float64(commands)/elapsed.Seconds(), l.app.Stats(), l.store.Stats())

	// Fold every stream: the truth.
	folds := make(map[uuid.UUID]*folded, accounts)
	var sumCoins, sumSpent, sumGranted, sumSent, sumReceived domain.Coins
	var nBuys, nSent, nGrants int
	for i, id := range ids {
		f, err := foldStream(ctx, l.store, id)
		if err != nil {
			t.Fatal(err)
		}
		folds[id] = f
		if f.acc.Balance < 0 {
			t.Errorf("%s: negative balance %d", names[i], f.acc.Balance)
		}
		if f.acc.Granted != f.granted {
			t.Errorf("%s: account totals %d granted, events %d", names[i], f.acc.Granted, f.granted)
		}
		sumCoins += f.acc.Balance
		sumSpent += f.acc.Spent
		sumGranted += f.granted
		sumSent += f.acc.Sent
		sumReceived += f.acc.Received
		for _, e := range f.events {
			switch e.event.(type) {
			case domain.ItemPurchased:
				nBuys++
			case domain.CoinsSent:
				nSent++
			case domain.CoinsGranted:
				nGrants++
			}
		}
	}
	t.Logf("Σcoins %d + Σspent %d = %d; Σgranted %d; Σsent %d, Σreceived %d",
		sumCoins, sumSpent, sumCoins+sumSpent, sumGranted, sumSent, sumReceived)
	if sumCoins+sumSpent != sumGranted {
		t.Errorf("Σcoins + Σspent = %d, Σgranted = %d: coins were created or destroyed", sumCoins+sumSpent, sumGranted)
	}
	if sumSent != sumReceived {
		t.Errorf("Σsent %d != Σreceived %d", sumSent, sumReceived)
	}
	// Every command that returned success left exactly its events, and no failed one left any.
	if want := counts[opBuy]["ok"]; nBuys != want {
		t.Errorf("%d purchases in the log, %d buys succeeded", nBuys, want)
	}
	if want := counts[opTransfer]["ok"]; nSent != want {
		t.Errorf("%d transfers in the log, %d succeeded", nSent, want)
	}
	if want := counts[opGrant]["ok"] + accounts; nGrants != want {
		t.Errorf("%d grants in the log, %d succeeded plus %d welcome grants", nGrants, counts[opGrant]["ok"], accounts)
	}

	checkTransferTwins(t, folds)

	// Info equals the fold whatever state the projectors are in: it never serves anything
	// older than the stream head.
	for i, id := range ids {
		in, err := l.app.Info(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d := compareInfo(in, folds[id]); d != "" {
			t.Errorf("%s: Info differs from the fold of its stream: %s", names[i], d)
		}
	}
	t.Logf("after Info of every account: app %+v", l.app.Stats())

	// The projectors read the log in (transaction, position) order and need each stream's
	// events in version order.
	breaks, n, err := logOrderBreaks(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		logProjectionFailure(t, 10*time.Second)
		t.Fatalf("%d events: %s", n, logOrderDefect+strings.Join(breaks, "; "))
	}

	if !liveProjectors {
		l.startProjectors(t)
	}
	caughtUp := time.Now()
	waitProjected(t, 60*time.Second)
	t.Logf("projectors caught up %v after the checks of the log", time.Since(caughtUp).Round(time.Millisecond))
	checkReadModelsAgainstLog(t, ctx, names, ids, folds)
	// Info again, now from the caught-up read models.
	fresh := l.app.Stats().ReadFresh
	for i, id := range ids {
		in, err := l.app.Info(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d := compareInfo(in, folds[id]); d != "" {
			t.Errorf("%s: Info from the read models differs from the fold of its stream: %s", names[i], d)
		}
	}
	if got := l.app.Stats().ReadFresh - fresh; got != uint64(len(ids)) {
		t.Errorf("%d of %d Info calls were served fresh from caught-up read models", got, len(ids))
	}
	t.Logf("after checks: app %+v", l.app.Stats())
	for _, g := range projectionGroups() {
		c := l.runner.Counters(g)
		t.Logf("projection %s: %+v", g, c)
		if c.Failures != 0 || c.Failed {
			t.Errorf("projection %s had failures: %+v", g, c)
		}
	}
}

// transferHalf is one side of a transfer as found in the log.
type transferHalf struct {
	stream  uuid.UUID
	version int64
	from    domain.AccountRef
	to      domain.AccountRef
	amount  domain.Coins
}

// checkTransferTwins checks that every CoinsSent has exactly one CoinsReceived with the same
// transfer id, parties and amount, in the recipient's stream, and the other way round.
func checkTransferTwins(t *testing.T, folds map[uuid.UUID]*folded) {
	t.Helper()
	sent := map[uuid.UUID][]transferHalf{}
	received := map[uuid.UUID][]transferHalf{}
	for id, f := range folds {
		for _, e := range f.events {
			switch ev := e.event.(type) {
			case domain.CoinsSent:
				sent[ev.TransferID] = append(sent[ev.TransferID], transferHalf{id, e.version, ev.From, ev.To, ev.Amount})
			case domain.CoinsReceived:
				received[ev.TransferID] = append(received[ev.TransferID], transferHalf{id, e.version, ev.From, ev.To, ev.Amount})
			}
		}
	}
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for tid, ss := range sent {
		rs := received[tid]
		if len(ss) != 1 || len(rs) != 1 {
			report("transfer %s: %d CoinsSent, %d CoinsReceived", tid, len(ss), len(rs))
			continue
		}
		s, r := ss[0], rs[0]
		if s.stream != s.from.ID || r.stream != r.to.ID || s.from != r.from || s.to != r.to || s.amount != r.amount {
			report("transfer %s: halves disagree: sent %+v, received %+v", tid, s, r)
		}
	}
	for tid := range received {
		if _, ok := sent[tid]; !ok {
			report("transfer %s: CoinsReceived without CoinsSent", tid)
		}
	}
	t.Logf("%d transfers, each with both halves", len(sent))
}

// checkReadModelsAgainstLog compares balance_v1, inventory_v1 and history_v2 with the fold of the log.
func checkReadModelsAgainstLog(t *testing.T, ctx context.Context, names []string, ids []uuid.UUID, folds map[uuid.UUID]*folded) {
	t.Helper()
	for i, id := range ids {
		f := folds[id]
		var coins int64
		var username string
		if err := db.Pool.QueryRow(ctx, `SELECT coins, username FROM balance_v1 WHERE account_id = $1`, id).Scan(&coins, &username); err != nil {
			t.Fatalf("%s: balance_v1: %v", names[i], err)
		}
		if coins != int64(f.acc.Balance) || username != names[i] {
			t.Errorf("%s: balance_v1 has %d coins for %q, the log folds to %d", names[i], coins, username, f.acc.Balance)
		}
		items, err := readInventory(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(items, f.acc.Items) && !(len(items) == 0 && len(f.acc.Items) == 0) {
			t.Errorf("%s: inventory_v1 %v, the log folds to %v", names[i], items, f.acc.Items)
		}
	}

	// History: each account's entries, as the active version holds them, are exactly its
	// transfer halves in the log, each at its own stream version.
	got := map[uuid.UUID][]projections.HistoryEntry{}
	if err := projections.ReadHistory(ctx, db.Pool, projections.HistoryV2(), func(account uuid.UUID, e projections.HistoryEntry) {
		e.At = time.Time{} // the fold here does not keep times; the verifier compares them
		got[account] = append(got[account], e)
	}); err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i, id := range ids {
		var want []projections.HistoryEntry
		for _, e := range folds[id].events {
			switch ev := e.event.(type) {
			case domain.CoinsSent:
				want = append(want, projections.HistoryEntry{Version: e.version, Sent: true, Counterpart: ev.To.Username, Amount: int64(ev.Amount), Transfer: ev.TransferID})
			case domain.CoinsReceived:
				want = append(want, projections.HistoryEntry{Version: e.version, Counterpart: ev.From.Username, Amount: int64(ev.Amount), Transfer: ev.TransferID})
			}
		}
		have := got[id]
		slices.SortFunc(have, func(a, b projections.HistoryEntry) int { return cmp.Compare(a.Version, b.Version) })
		if !slices.Equal(have, want) {
			if bad++; bad <= 10 {
				t.Errorf("%s: history_v2 holds %d entries, the log %d transfer halves, or they differ:\n got %+v\nwant %+v",
					names[i], len(have), len(want), have, want)
			}
		}
	}
}
