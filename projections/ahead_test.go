package projections

import (
	"testing"
	"time"
)

func ev(tx uint64, pos int64) logEvent { return logEvent{TransactionID: tx, Position: pos} }

func cp(tx uint64, pos int64) checkpoint { return checkpoint{TransactionID: tx, Position: pos} }

// started is when the test's server started; restarted, when it started again.
var started, restarted = time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC), time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)

func by(xid uint32) writer { return writer{xid: xid, started: started} }

func TestAheadSettlesOnlyWhatTheFenceHasPassed(t *testing.T) {
	from := cp(10, 100)
	for _, c := range []struct {
		name   string
		ahead  []logEvent // committed ahead by writer 7
		events []logEvent
		full   bool
		fence  uint64
		writer writer
		want   checkpoint
	}{
		{"nothing below the fence", nil, []logEvent{ev(12, 103), ev(13, 101)}, false, 12, by(7), from},
		{"the settled prefix of the events", nil, []logEvent{ev(11, 102), ev(12, 103), ev(14, 104)}, false, 14, by(7), cp(12, 103)},
		{"events ahead the fence has passed", []logEvent{ev(12, 103), ev(15, 106)}, []logEvent{ev(11, 102)}, false, 14, by(7), cp(12, 103)},
		{"only events ahead", []logEvent{ev(12, 103), ev(15, 106)}, nil, false, 16, by(7), cp(15, 106)},
		// The batch size cut the poll short after (13, 107): an unread event may lie between it
		// and the event ahead at (15, 106).
		{"a full batch caps the checkpoint", []logEvent{ev(15, 106)}, []logEvent{ev(11, 102), ev(13, 107)}, true, 16, by(7), cp(13, 107)},
		// A poll allowed no event (the projector is stopping) read none: an unread event may
		// lie between the checkpoint and every event ahead.
		{"a poll that read nothing moves nothing", []logEvent{ev(12, 103), ev(15, 106)}, nil, true, 16, by(7), from},
		// Someone else wrote the checkpoint's row: the poll left nothing out, and the record
		// says nothing of what is applied.
		{"another writer", []logEvent{ev(12, 103)}, []logEvent{ev(11, 102)}, false, 14, by(8), cp(11, 102)},
		// After a crash, another commit wrote the row under the id of the projector's lost
		// last commit.
		{"the same id after a restart", []logEvent{ev(12, 103)}, []logEvent{ev(11, 102)}, false, 14,
			writer{xid: 7, started: restarted}, cp(11, 102)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var a ahead
			if c.ahead != nil {
				a.committed(c.ahead, from, by(7))
			}
			if got := a.settle(c.events, c.full, from, c.fence, c.writer); got != c.want {
				t.Errorf("settle = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestAheadKeepsWhatLiesBeyondTheCheckpoint(t *testing.T) {
	var a ahead
	if positions, w, above := a.exclusions(); len(positions) != 0 || w != (writer{}) || !above {
		t.Fatalf("an empty record leaves out %v (writer %+v, above the fence %v)", positions, w, above)
	}
	a.committed([]logEvent{ev(11, 102), ev(12, 103), ev(15, 106)}, cp(11, 102), by(7))
	if positions, w, _ := a.exclusions(); len(positions) != 2 || w != by(7) {
		t.Fatalf("exclusions %v (writer %+v), want 103 and 106 (writer 7)", positions, w)
	}
	a.committed(nil, cp(12, 103), by(9))
	if positions, w, _ := a.exclusions(); len(positions) != 1 || positions[0] != 106 || w != by(9) {
		t.Fatalf("exclusions %v (writer %+v), want 106 (writer 9)", positions, w)
	}
	a.forget()
	if positions, w, _ := a.exclusions(); len(positions) != 0 || w != (writer{}) {
		t.Fatalf("a forgotten record leaves out %v (writer %+v)", positions, w)
	}

	// A record that is full reads below the fence only, until the fence passes some of it.
	full := make([]logEvent, aheadLimit)
	for i := range full {
		full[i] = ev(uint64(20+i), int64(200+i))
	}
	a.committed(full, cp(11, 102), by(9))
	if _, _, above := a.exclusions(); above {
		t.Fatalf("a record of %d events still reads above the fence", aheadLimit)
	}
	a.committed(nil, cp(20, 200), by(10))
	if _, _, above := a.exclusions(); !above {
		t.Fatal("the record does not read above the fence again once the fence passed some of it")
	}
}
