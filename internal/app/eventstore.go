package app

import (
	"context"
	"time"

	"github.com/ledger/ledger/eventstore"
)

// EventStore is what the application needs of the event store: appends with expected
// versions, an aggregate's snapshot and newest events, a stream's past, and the fenced global
// log. eventstore.Store (PostgreSQL) implements it and passes its conformance suite
// (TestPostgresEventStoreConforms).
type EventStore interface {
	Append(ctx context.Context, appends []eventstore.StreamAppend, opts ...eventstore.AppendOption) (eventstore.AppendResult, error)
	LoadState(ctx context.Context, streamID string) (eventstore.StreamState, error)
	Load(ctx context.Context, streamID string, after int64) ([]eventstore.RecordedEvent, error)
	LoadPage(ctx context.Context, streamID string, after int64, limit int) ([]eventstore.RecordedEvent, error)
	ReadStream(ctx context.Context, streamID string, after int64, limit int, fn func(*eventstore.RecordedEvent) error) error
	LoadThroughPosition(ctx context.Context, streamID string, pos int64) ([]eventstore.RecordedEvent, error)
	LoadRecordedBy(ctx context.Context, streamID string, t time.Time) ([]eventstore.RecordedEvent, error)
	ReadLog(ctx context.Context, after eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error)
	WalkLog(ctx context.Context, r eventstore.LogRange, pageSize int, fn func(page []eventstore.RecordedEvent) error) (eventstore.Checkpoint, error)
	ReadLogBefore(ctx context.Context, before eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error)
}

var _ EventStore = (*eventstore.Store)(nil)
