package projections

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ledger/ledger/internal/notify"
)

// TestPollsAreSpaced checks the backoff's spacing: after a batch, and after a wake-up that
// ends an empty poll's wait, the next poll starts no sooner than the spacing after the last
// one began, and at once when that time has passed or spacing is off.
func TestPollsAreSpaced(t *testing.T) {
	const spacing = 10 * time.Second // long, so that a slow machine cannot make the test wrong
	newBackoff := func(spacing time.Duration) (*pollWake, *eventsSchema) {
		b := &pollWake{signal: notify.NewSignal(), pollInterval: time.Minute, spacing: spacing,
			stop: make(chan struct{})}
		return b, &eventsSchema{wake: b, batchSize: 10}
	}
	log := watermill.NopLogger{}

	b, s := newBackoff(spacing)
	if _, err := s.SelectQuery(wsql.SelectQueryParams{ConsumerGroup: "spacing_v1"}); err != nil {
		t.Fatal(err)
	}
	if d := b.HandleError(log, false, nil); d <= spacing/2 || d > spacing {
		t.Errorf("right after a poll with a batch the next waits %v, want up to %v", d, spacing)
	}

	// An empty poll waits for a wake-up, then for the rest of the spacing.
	if _, err := s.SelectQuery(wsql.SelectQueryParams{ConsumerGroup: "spacing_v1"}); err != nil {
		t.Fatal(err)
	}
	b.signal.Notify()
	if d := b.HandleError(log, true, nil); d <= spacing/2 || d > spacing {
		t.Errorf("after a wake-up right after an empty poll the next waits %v, want up to %v", d, spacing)
	}

	// Once the spacing has passed since the poll began, the next poll starts at once.
	b.started = time.Now().Add(-2 * spacing)
	if d := b.HandleError(log, false, nil); d != 0 {
		t.Errorf("a poll that began %v ago is followed after %v, want at once", 2*spacing, d)
	}

	off, s := newBackoff(-1)
	if _, err := s.SelectQuery(wsql.SelectQueryParams{ConsumerGroup: "spacing_v1"}); err != nil {
		t.Fatal(err)
	}
	if d := off.HandleError(log, false, nil); d != 0 {
		t.Errorf("without spacing the next poll waits %v, want at once", d)
	}
}
