package app_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
)

// TestConcurrentInfoReadsShareStatementsAndStayExact reads many accounts at once, so that one
// statement carries several accounts, and checks every answer against the fold of the
// account's own stream: a grouped read must never hand one account another's row.
func TestConcurrentInfoReadsShareStatementsAndStayExact(t *testing.T) {
	ctx := context.Background()
	l := start(t, true, app.Config{ReadSlots: 1})
	names, ids := openAccounts(t, l.app, "grp", 12, 4)
	items := []string{"pen", "cup", "book"}
	for i, id := range ids {
		for k := range i % 4 {
			if _, err := l.app.Buy(ctx, id, items[(i+k)%len(items)]); err != nil {
				t.Fatal(err)
			}
		}
		for k := range i % 3 {
			if _, err := l.app.Transfer(ctx, id, names[(i+k+1)%len(names)], domain.Coins(k+1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitProjected(t, 30*time.Second)

	want := make(map[uuid.UUID]*folded, len(ids))
	for _, id := range ids {
		f, err := foldStream(ctx, l.store, id)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = f
	}
	unknown := uuid.New()
	for burst := 1; ; burst++ {
		before := l.app.Stats()
		var wg sync.WaitGroup
		errs := make(chan error, 20*len(ids))
		for r := range 20 {
			for i, id := range ids {
				wg.Go(func() {
					in, err := l.app.Info(ctx, id)
					if err != nil {
						errs <- fmt.Errorf("info of %s: %w", names[i], err)
						return
					}
					if d := compareInfo(in, want[id]); d != "" {
						errs <- fmt.Errorf("round %d, %s: %s", r, names[i], d)
					}
				})
			}
			wg.Go(func() {
				if _, err := l.app.Info(ctx, unknown); !errors.Is(err, domain.ErrUnknownAccount) {
					errs <- fmt.Errorf("info of an unknown account among known ones: %v", err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
		after := l.app.Stats()
		statements, reads := after.ReadStatements-before.ReadStatements, after.ReadsGrouped-before.ReadsGrouped
		t.Logf("burst %d: %d reads in %d statements", burst, reads, statements)
		if statements < reads {
			return // some statement carried several accounts, and every answer was exact
		}
		if burst == 5 {
			t.Fatalf("%d bursts of %d concurrent reads through one slot never shared a statement", burst, reads)
		}
	}
}
