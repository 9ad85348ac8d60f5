package eventstore

import (
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/internal/group"
)

// Group commit defaults: how many group transactions may be in flight at once, and the most
// appends one of them takes.
const (
	defaultGroupWriters = 4
	defaultGroupSize    = 64
	// groupTimeout bounds one group transaction whose callers have no deadline. A group is not
	// tied to any one caller's context: a caller that goes away must not abort the appends of
	// the others. It ends at its callers' earliest deadline, though, so that no append commits
	// after its caller has given up on it (see write).
	groupTimeout = 10 * time.Second
)

// WithGroupCommit sets how many group transactions may be in flight at once (writers) and
// the most appends one of them writes (size; 0 keeps the default).
func WithGroupCommit(writers, size int) Option {
	return func(s *Store) {
		if size <= 0 {
			size = defaultGroupSize
		}
		s.group.batch = group.New[*request](writers, size)
	}
}

// committer groups concurrent appends into shared transactions (see package group): an append
// queues itself, and whichever caller gets a writer slot writes the queue's head as one group.
type committer struct {
	s     *Store
	batch *group.Batcher[*request]
}

// submit reports whether r was finished before its caller's context ended. If not, r stays
// queued, to be abandoned, or in a group that ends by the same deadline.
func (c *committer) submit(r *request) bool {
	return c.batch.Do(r, r.ctx.Done(), c.write)
}

// write writes a group, retrying deadlocks and serialization failures. If the group fails
// otherwise, each append is written alone, so that one bad append fails only itself. The
// group's transaction ends at its callers' earliest deadline: a stalled database fails the
// group before any caller gives up, and a COMMIT is never sent for a caller that has.
func (c *committer) write(reqs []*request) {
	ctx, cancel := group.Context(reqs, group.FirstDeadline, groupTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := c.s.writeGroup(ctx, reqs, nil)
		if err == nil {
			return
		}
		if attempt < maxTxAttempts && isTransient(err) {
			c.s.txRetries.Add(1)
			continue
		}
		if len(reqs) == 1 {
			reqs[0].finish(AppendResult{}, err)
			return
		}
		for _, r := range reqs {
			alone, cancel := group.Context([]*request{r}, group.FirstDeadline, groupTimeout)
			c.s.writeAlone(alone, r, nil)
			cancel()
		}
		return
	}
}

// head is a stream's newest version and hash, as read under the stream locks or as a group has
// moved it; the zero head is a stream that does not exist yet.
type head struct {
	version  int64
	lastHash []byte
}

// groupWrite accumulates the rows a group transaction writes.
type groupWrite struct {
	evStream  []string
	evVersion []int64
	evID      []uuid.UUID
	evType    []string
	evSchema  []int32
	evPayload [][]byte
	evMeta    [][]byte
	evAt      []time.Time
	evHash    [][]byte

	final map[string]*finalHead
}

// finalHead is what a group leaves on a stream's head row.
type finalHead struct {
	version         int64
	hash            []byte
	snapshot        *string
	snapshotVersion int64
}

func newGroupWrite(streams int) *groupWrite {
	return &groupWrite{final: make(map[string]*finalHead, streams)}
}

// add checks an append's expectations against heads and, when they all hold, adds its events
// (chained onto each stream's hash) and moves heads on; otherwise it changes nothing and
// returns the *ConcurrencyError.
func (w *groupWrite) add(heads map[string]head, batch []preparedStream) (AppendResult, error) {
	for _, ps := range batch {
		if h := heads[ps.streamID]; !ps.expected.matches(h.version) {
			return AppendResult{}, &ConcurrencyError{StreamID: ps.streamID, Expected: ps.expected, Actual: h.version}
		}
	}
	res := AppendResult{Streams: make([]StreamResult, len(batch))}
	for i, ps := range batch {
		h := heads[ps.streamID]
		prev, v := h.lastHash, h.version
		for _, e := range ps.events {
			v++
			sum := hashV2(prev, hashInput{
				streamID: ps.streamID, version: v, id: e.id, eventType: e.eventType,
				schemaVersion: e.schemaVersion, recordedAt: e.recordedAt, payload: e.payload, metadata: e.metadata,
			})
			hash := sum[:]
			w.evStream = append(w.evStream, ps.streamID)
			w.evVersion = append(w.evVersion, v)
			w.evID = append(w.evID, e.id)
			w.evType = append(w.evType, e.eventType)
			w.evSchema = append(w.evSchema, int32(e.schemaVersion))
			w.evPayload = append(w.evPayload, e.payload)
			w.evMeta = append(w.evMeta, e.metadata)
			w.evAt = append(w.evAt, e.recordedAt)
			w.evHash = append(w.evHash, hash)
			prev = hash
		}
		heads[ps.streamID] = head{version: v, lastHash: prev}
		f := w.final[ps.streamID]
		if f == nil {
			f = &finalHead{}
			w.final[ps.streamID] = f
		}
		f.version, f.hash = v, prev
		if ps.snapshot != nil {
			snap := string(ps.snapshot)
			f.snapshot, f.snapshotVersion = &snap, v
		}
		res.Streams[i] = StreamResult{StreamID: ps.streamID, FromVersion: h.version, ToVersion: v}
	}
	return res, nil
}

type headArrays struct {
	stream          []string
	version         []int64
	hash            [][]byte
	snapshot        []*string
	snapshotVersion []int64
}

// headArrays returns one row per stream the group wrote, in stream order.
func (w *groupWrite) headArrays() headArrays {
	var a headArrays
	for _, id := range slices.Sorted(func(yield func(string) bool) {
		for id := range w.final {
			if !yield(id) {
				return
			}
		}
	}) {
		f := w.final[id]
		a.stream = append(a.stream, id)
		a.version = append(a.version, f.version)
		a.hash = append(a.hash, f.hash)
		a.snapshot = append(a.snapshot, f.snapshot)
		a.snapshotVersion = append(a.snapshotVersion, f.snapshotVersion)
	}
	return a
}
