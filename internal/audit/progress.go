package audit

import (
	"context"
	"fmt"

	"github.com/ledger/ledger/eventstore"
)

// ProgressHook prepares the progress reports of a long pass over the log (an audit, a
// republish): it counts the events after after up to and including until, and returns what to
// call with the number of events done so far. Without a hook it counts nothing and the
// returned function does nothing.
func ProgressHook(ctx context.Context, store *eventstore.Store, after, until eventstore.Checkpoint, hook func(done, total int64)) (func(done int64), error) {
	if hook == nil {
		return func(int64) {}, nil
	}
	total, err := eventstore.CountLog(ctx, store.Pool(), after, until)
	if err != nil {
		return nil, fmt.Errorf("audit: count the events to go through: %w", err)
	}
	hook(0, total)
	return func(done int64) { hook(done, total) }, nil
}
