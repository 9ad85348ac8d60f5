package projections

import (
	"cmp"
	"sync"
	"time"
)

// ahead is what a projector has committed above the fence: events applied before every
// transaction older than them had ended. Polls leave them out (they are applied) until the
// fence passes them, and the checkpoint then moves past them.
//
// It is only a record of this projector's own commits, so it holds while the checkpoint's row
// is as its last commit left it: written by that commit (see writer). A rebuild, or anything
// else that writes a read model, writes the checkpoint in the same transaction, which gives
// the row another writer; the poll then leaves nothing out (see eventsSchema.SelectQuery) and
// the record is dropped. It is also dropped whenever a commit's outcome is unknown; the
// version guard then recognises what was applied.
//
// A transaction that holds its id for long (which the log's other readers suffer from too)
// would make the record grow with every event committed meanwhile; once it holds aheadLimit
// events, polls read only below the fence, as every reader of the log does, until the fence
// moves on.
type ahead struct {
	mu     sync.Mutex
	events map[int64]uint64 // position → transaction id
	writer writer           // zero: not known, and nothing is left out
}

// writer names the commit that last wrote the checkpoint's row: its transaction id, as the
// row's xmin holds it (32 bits), and when the server that ran it started. A crash hands out
// again the ids of the transactions it lost, and the projector's commits do not wait for the
// WAL: after one, another commit (another process's, which took the lease over) could write
// the row under the id of the projector's lost last commit. The start time tells them apart.
type writer struct {
	xid     uint32
	started time.Time
}

// aheadLimit is the most events the record holds.
const aheadLimit = 2000

// exclusions returns the positions a poll may leave out, the writer the checkpoint's row must
// still have for that, and whether the poll may read above the fence.
func (a *ahead) exclusions() (positions []int64, w writer, aboveFence bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	aboveFence = len(a.events) < aheadLimit
	if a.writer == (writer{}) || len(a.events) == 0 {
		return []int64{}, writer{}, aboveFence
	}
	positions = make([]int64, 0, len(a.events))
	for p := range a.events {
		positions = append(positions, p)
	}
	return positions, a.writer, aboveFence
}

// forget drops the record.
func (a *ahead) forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.events)
	a.writer = writer{}
}

// settle returns where the checkpoint can move after a poll from checkpoint from, which read
// events (in log order) besides the ones the record holds, with the fence at transaction
// fence, the checkpoint's row written by writer. full says the poll's limit may have cut it
// short: it read as many events as it was allowed to, none at all for a poll allowed none.
// Every committed event after the checkpoint below the fence is one of those or the record's,
// or, when the batch is full, after its last event read (after the checkpoint, if it read
// none): the checkpoint moves to the last of them. If the row's writer is not the one the
// record expects, the poll left nothing out and the record is dropped.
func (a *ahead) settle(events []logEvent, full bool, from checkpoint, fence uint64, w writer) checkpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !w.is(a.writer) {
		clear(a.events)
		a.writer = writer{}
	}
	to := from
	advance := func(c checkpoint) {
		if c.TransactionID < fence && checkpointOrder(c, to) > 0 {
			to = c
		}
	}
	for _, e := range events {
		advance(e.checkpoint())
	}
	read := from // every event up to here was read or is in the record
	if len(events) > 0 {
		read = events[len(events)-1].checkpoint()
	}
	for p, tx := range a.events {
		c := checkpoint{TransactionID: tx, Position: p}
		if !full || checkpointOrder(c, read) < 0 {
			advance(c)
		}
	}
	return to
}

// is reports whether w and o name the same commit.
func (w writer) is(o writer) bool { return w.xid == o.xid && w.started.Equal(o.started) }

// committed records a commit by w that applied events and moved the checkpoint to "to": what
// lies beyond it is now ahead.
func (a *ahead) committed(events []logEvent, to checkpoint, w writer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.events == nil {
		a.events = make(map[int64]uint64)
	}
	for p, tx := range a.events {
		if checkpointOrder(checkpoint{TransactionID: tx, Position: p}, to) <= 0 {
			delete(a.events, p)
		}
	}
	for _, e := range events {
		if checkpointOrder(e.checkpoint(), to) > 0 {
			a.events[e.Position] = e.TransactionID
		}
	}
	a.writer = w
}

func checkpointOrder(a, b checkpoint) int {
	if c := cmp.Compare(a.TransactionID, b.TransactionID); c != 0 {
		return c
	}
	return cmp.Compare(a.Position, b.Position)
}
