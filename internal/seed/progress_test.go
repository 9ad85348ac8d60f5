package seed

import (
	"context"
	"sync"
	"testing"

	"github.com/ledger/ledger/internal/pgtest"
)

// TestRunReportsProgress: every employee done is reported once, of the whole number, from
// whichever worker did it.
func TestRunReportsProgress(t *testing.T) {
	// A database of its own: the package's other tests count every event of theirs.
	own, err := pgtest.Create(context.Background(), "seed_progress")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Drop()
	var mu sync.Mutex
	seen := map[int64]bool{}
	opts := Options{DatabaseURL: own.URL, Users: 20, Prefix: "seedprogress", Workers: 4, Issuer: newIssuer(t, nil),
		Progress: func(done, total int64) {
			mu.Lock()
			defer mu.Unlock()
			if total != 20 || seen[done] {
				t.Errorf("reported %d of %d (again: %v)", done, total, seen[done])
			}
			seen[done] = true
		}}
	if _, _, err := Run(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 20; i++ {
		if !seen[i] {
			t.Fatalf("%d of 20 was never reported (reports: %v)", i, seen)
		}
	}
}
