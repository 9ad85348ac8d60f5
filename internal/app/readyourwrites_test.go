package app_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
)

// rywParty is one account and what the test expects Info to show for it.
type rywParty struct {
	name           string
	id             uuid.UUID
	coins          int64
	items          map[string]int64
	sent, received int
}

// rywPair runs commands between two accounts and checks, after each, that Info of every party
// shows the command's effect.
type rywPair struct {
	app    *app.App
	prices domain.Catalog
	p      [2]*rywParty
	reads  int
}

func newRYWPair(t *testing.T, a *app.App, prefix string) *rywPair {
	t.Helper()
	ctx := context.Background()
	prices, err := a.Catalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pr := &rywPair{app: a, prices: prices}
	for i := range pr.p {
		name := fmt.Sprintf("%s-%d", prefix, i)
		id, _, err := a.OpenAccount(ctx, name, "hash")
		if err != nil {
			t.Fatal(err)
		}
		pr.p[i] = &rywParty{name: name, id: id, coins: int64(domain.WelcomeGrant), items: map[string]int64{}}
	}
	return pr
}

// topUp grants the party 1,000 coins when it has fewer than need.
func (pr *rywPair) topUp(ctx context.Context, p *rywParty, need int64) error {
	if p.coins >= need {
		return nil
	}
	if _, err := pr.app.Grant(ctx, "admin", p.name, 1000, "top-up"); err != nil {
		return fmt.Errorf("grant to %s: %w", p.name, err)
	}
	p.coins += 1000
	return nil
}

// check reads Info of p and compares it with the model; the answer must be at least at version.
func (pr *rywPair) check(ctx context.Context, p *rywParty, version int64, what string) error {
	in, err := pr.app.Info(ctx, p.id)
	pr.reads++
	if err != nil {
		return fmt.Errorf("after %s: Info(%s): %w", what, p.name, err)
	}
	items, err := holdings(in)
	switch {
	case err != nil:
	case in.Version < version:
		err = fmt.Errorf("version %d, the command wrote %d", in.Version, version)
	case in.Coins != p.coins:
		err = fmt.Errorf("coins %d, want %d", in.Coins, p.coins)
	case !maps.Equal(items, p.items):
		err = fmt.Errorf("inventory %v, want %v", items, p.items)
	case len(in.Sent) != p.sent || len(in.Received) != p.received:
		err = fmt.Errorf("%d sent / %d received, want %d / %d", len(in.Sent), len(in.Received), p.sent, p.received)
	}
	if err != nil {
		return fmt.Errorf("after %s, Info(%s) does not show it: %w", what, p.name, err)
	}
	return nil
}

// step runs command k: a purchase on even k, a transfer on odd k, alternating the parties.
func (pr *rywPair) step(ctx context.Context, k int) error {
	actor, other := pr.p[(k/2)%2], pr.p[1-(k/2)%2]
	if k%2 == 0 {
		item := knownItems[(k/2)%len(knownItems)]
		price := int64(pr.prices[item])
		if err := pr.topUp(ctx, actor, price); err != nil {
			return err
		}
		res, err := pr.app.Buy(ctx, actor.id, item)
		if err != nil {
			return fmt.Errorf("command %d: %s buys %s: %w", k, actor.name, item, err)
		}
		actor.coins -= price
		actor.items[item]++
		return pr.check(ctx, actor, res.Versions[actor.id], fmt.Sprintf("command %d (%s buys %s)", k, actor.name, item))
	}
	amount := int64(1 + k%50)
	if err := pr.topUp(ctx, actor, amount); err != nil {
		return err
	}
	res, err := pr.app.Transfer(ctx, actor.id, other.name, domain.Coins(amount))
	if err != nil {
		return fmt.Errorf("command %d: %s sends %d to %s: %w", k, actor.name, amount, other.name, err)
	}
	actor.coins -= amount
	actor.sent++
	other.coins += amount
	other.received++
	what := fmt.Sprintf("command %d (%s sends %d to %s)", k, actor.name, amount, other.name)
	if err := pr.check(ctx, actor, res.Versions[actor.id], what); err != nil {
		return err
	}
	return pr.check(ctx, other, res.Versions[other.id], what)
}

// run runs commands from..to-1.
func (pr *rywPair) run(ctx context.Context, from, to int) error {
	for k := from; k < to; k++ {
		if err := pr.step(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

// TestReadYourWrites checks that Info after a command always shows it, whether the projectors
// are running, not running (every read folds the log), or started half way (reads meet read
// models at every stage of catching up), and with several clients at once.
func TestReadYourWrites(t *testing.T) {
	const iterations = 1000
	ctx := context.Background()

	t.Run("projectors running", func(t *testing.T) {
		l := start(t, true, app.Config{})
		pr := newRYWPair(t, l.app, "run")
		if err := pr.run(ctx, 0, iterations); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d reads; app %+v", pr.reads, l.app.Stats())
	})

	t.Run("projectors stopped", func(t *testing.T) {
		// Every read folds the whole stream here, so the commands are spread over ten pairs
		// in turn to keep the streams (and the folds) short.
		l := start(t, false, app.Config{})
		const pairs = 10
		reads := 0
		for i := range pairs {
			pr := newRYWPair(t, l.app, fmt.Sprintf("stopped%d", i))
			if err := pr.run(ctx, 0, iterations/pairs); err != nil {
				t.Fatal(err)
			}
			reads += pr.reads
		}
		s := l.app.Stats()
		t.Logf("%d reads; app %+v", reads, s)
		if s.ReadFresh != 0 || s.ReadAfterWait != 0 || s.ReadFolded != uint64(reads) {
			t.Errorf("without projectors every one of the %d reads must fold the log: %+v", reads, s)
		}
	})

	t.Run("projectors started half way", func(t *testing.T) {
		l := start(t, false, app.Config{})
		pr := newRYWPair(t, l.app, "late")
		const n = 400
		if err := pr.run(ctx, 0, n/2); err != nil {
			t.Fatal(err)
		}
		before := l.app.Stats()
		l.startProjectors(t)
		if err := pr.run(ctx, n/2, n); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d reads; app before the projectors started %+v, at the end %+v", pr.reads, before, l.app.Stats())
	})

	t.Run("8 pairs concurrently", func(t *testing.T) {
		l := start(t, true, app.Config{})
		const pairs = 8
		prs := make([]*rywPair, pairs)
		for i := range prs {
			prs[i] = newRYWPair(t, l.app, fmt.Sprintf("pair%d", i))
		}
		var wg sync.WaitGroup
		errs := make([]error, pairs)
		for i, pr := range prs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = pr.run(ctx, 0, iterations/pairs)
			}()
		}
		wg.Wait()
		reads := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("pair %d: %v", i, err)
			}
			reads += prs[i].reads
		}
		t.Logf("%d pairs × %d commands, %d reads; app %+v", pairs, iterations/pairs, reads, l.app.Stats())
		for _, g := range projectionGroups() {
			t.Logf("projection %s: %+v", g, l.runner.Counters(g))
		}
		waitProjected(t, 60*time.Second)
	})
}
