package projections

import "testing"

func ev(tx uint64, pos int64) logEvent { return logEvent{TransactionID: tx, Position: pos} }

func cp(tx uint64, pos int64) checkpoint { return checkpoint{TransactionID: tx, Position: pos} }

func TestAheadSettlesOnlyWhatTheFenceHasPassed(t *testing.T) {
	from := cp(10, 100)
	for _, c := range []struct {
		name   string
		ahead  []logEvent // committed ahead by writer 7
		events []logEvent
		full   bool
		fence  uint64
		writer uint32
		want   checkpoint
	}{
		{"nothing below the fence", nil, []logEvent{ev(12, 103), ev(13, 101)}, false, 12, 7, from},
		{"the settled prefix of the events", nil, []logEvent{ev(11, 102), ev(12, 103), ev(14, 104)}, false, 14, 7, cp(12, 103)},
		{"events ahead the fence has passed", []logEvent{ev(12, 103), ev(15, 106)}, []logEvent{ev(11, 102)}, false, 14, 7, cp(12, 103)},
		{"only events ahead", []logEvent{ev(12, 103), ev(15, 106)}, nil, false, 16, 7, cp(15, 106)},
		// The batch size cut the poll short after (13, 107): an unread event may lie between it
		// and the event ahead at (15, 106).
		{"a full batch caps the checkpoint", []logEvent{ev(15, 106)}, []logEvent{ev(11, 102), ev(13, 107)}, true, 16, 7, cp(13, 107)},
		// A poll allowed no event (the projector is stopping) read none: an unread event may
		// lie between the checkpoint and every event ahead.
		{"a poll that read nothing moves nothing", []logEvent{ev(12, 103), ev(15, 106)}, nil, true, 16, 7, from},
		// Someone else wrote the checkpoint's row: the poll left nothing out, and the record
		// says nothing of what is applied.
		{"another writer", []logEvent{ev(12, 103)}, []logEvent{ev(11, 102)}, false, 14, 8, cp(11, 102)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var a ahead
			if c.ahead != nil {
				a.committed(c.ahead, from, 7)
			}
			if got := a.settle(c.events, c.full, from, c.fence, c.writer); got != c.want {
				t.Errorf("settle = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestAheadKeepsWhatLiesBeyondTheCheckpoint(t *testing.T) {
	var a ahead
	if positions, writer, above := a.exclusions(); len(positions) != 0 || writer != 0 || !above {
		t.Fatalf("an empty record leaves out %v (writer %d, above the fence %v)", positions, writer, above)
	}
	a.committed([]logEvent{ev(11, 102), ev(12, 103), ev(15, 106)}, cp(11, 102), 7)
	if positions, writer, _ := a.exclusions(); len(positions) != 2 || writer != 7 {
		t.Fatalf("exclusions %v (writer %d), want 103 and 106 (writer 7)", positions, writer)
	}
	a.committed(nil, cp(12, 103), 9)
	if positions, writer, _ := a.exclusions(); len(positions) != 1 || positions[0] != 106 || writer != 9 {
		t.Fatalf("exclusions %v (writer %d), want 106 (writer 9)", positions, writer)
	}
	a.forget()
	if positions, writer, _ := a.exclusions(); len(positions) != 0 || writer != 0 {
		t.Fatalf("a forgotten record leaves out %v (writer %d)", positions, writer)
	}

	// A record that is full reads below the fence only, until the fence passes some of it.
	full := make([]logEvent, aheadLimit)
	for i := range full {
		full[i] = ev(uint64(20+i), int64(200+i))
	}
	a.committed(full, cp(11, 102), 9)
	if _, _, above := a.exclusions(); above {
		t.Fatalf("a record of %d events still reads above the fence", aheadLimit)
	}
	a.committed(nil, cp(20, 200), 10)
	if _, _, above := a.exclusions(); !above {
		t.Fatal("the record does not read above the fence again once the fence passed some of it")
	}
}
