package audit

import (
	"context"
	"fmt"
	"io"

	"github.com/ledger/ledger/eventstore"
)

// ExportOptions say which part of the log to export; zero values take the defaults.
type ExportOptions struct {
	// After is exclusive: the export starts with the event after it (zero: the start of the log).
	After eventstore.Checkpoint
	// Until is inclusive (zero: the end of the log when the export starts, every event
	// committed before it included).
	Until eventstore.Checkpoint
	// PageSize is how many events one read of the log returns (default 10,000).
	PageSize int
	// Progress, when set, is told after each page how many events are written of how many.
	Progress func(done, total int64)
}

// ExportResult is what an export wrote.
type ExportResult struct {
	Events int64
	// Last is the checkpoint of the last event written; an export that stopped early resumes
	// after it. It is After when nothing was written.
	Last eventstore.Checkpoint
}

// Export writes the global log's events after opts.After up to and including opts.Until to w,
// one Record per line, in the order every reader of the log uses, reading through
// eventstore.WalkLog page by page. It flushes after every page, so a reader at the other end
// sees the lines as they come.
func Export(ctx context.Context, store *eventstore.Store, w io.Writer, opts ExportOptions) (ExportResult, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 10_000
	}
	until := opts.Until
	if until == (eventstore.Checkpoint{}) {
		var err error
		if until, err = store.LogHeadNow(ctx); err != nil {
			return ExportResult{Last: opts.After}, err
		}
	}
	progress, err := ProgressHook(ctx, store, opts.After, until, opts.Progress)
	if err != nil {
		return ExportResult{}, err
	}
	res := ExportResult{Last: opts.After}
	lw := NewLineWriter(w)
	res.Last, err = store.WalkLog(ctx, eventstore.LogRange{After: opts.After, Until: until}, opts.PageSize, func(page []eventstore.RecordedEvent) error {
		for _, e := range page {
			if err := lw.Write(e); err != nil {
				return fmt.Errorf("write event %s: %w", e.Checkpoint(), err)
			}
		}
		if err := lw.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		res.Events += int64(len(page))
		progress(res.Events)
		return nil
	})
	return res, err
}
