package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/ledger/ledger/eventstore"
)

// LogReader reads pages of the global log.
type LogReader interface {
	ReadLog(ctx context.Context, after eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error)
}

// ReadLogUntil reads the log after cp until it has returned want events. The fence is
// cluster-wide: any transaction on the server (another test's, in another database) holds it
// back for a moment, so an empty page means "nothing readable yet", not "end of log".
func ReadLogUntil(t testing.TB, r LogReader, cp eventstore.Checkpoint, pageSize, want int) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	deadline := time.Now().Add(20 * time.Second)
	for len(out) < want {
		page, err := r.ReadLog(context.Background(), cp, pageSize)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("read %d events of %d", len(out), want)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		out = append(out, page...)
		cp = page[len(page)-1].Checkpoint()
	}
	return out
}
