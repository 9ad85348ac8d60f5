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
// eventstore.ReadLog page by page. It flushes after every page, so a reader at the other end
// sees the lines as they come.
func Export(ctx context.Context, store *eventstore.Store, w io.Writer, opts ExportOptions) (ExportResult, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 10_000
	}
	until := opts.Until
	if until == (eventstore.Checkpoint{}) {
		var err error
		if until, err = store.LogHeadNow(ctx); err != nil {
			return ExportResult{}, err
		}
	}
	progress, err := ProgressHook(ctx, store, opts.After, until, opts.Progress)
	if err != nil {
		return ExportResult{}, err
	}
	res := ExportResult{Last: opts.After}
	lw := NewLineWriter(w)
	for res.Last.Before(until) {
		page, err := store.ReadLog(ctx, res.Last, opts.PageSize)
		if err != nil {
			return res, err
		}
		if len(page) == 0 {
			break // until lies beyond what is readable yet
		}
		n := 0
		for _, e := range page {
			if until.Before(e.Checkpoint()) {
				break
			}
			if err := lw.Write(e); err != nil {
				return res, fmt.Errorf("write event %s: %w", e.Checkpoint(), err)
			}
			n++
		}
		if err := lw.Flush(); err != nil {
			return res, fmt.Errorf("write: %w", err)
		}
		if n > 0 {
			res.Events += int64(n)
			res.Last = page[n-1].Checkpoint()
			progress(res.Events)
		}
		if n < len(page) {
			break
		}
	}
	return res, nil
}
