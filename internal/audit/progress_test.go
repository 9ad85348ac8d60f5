package audit_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
)

// progressCalls records what a progress hook is told.
type progressCalls [][2]int64

func (p *progressCalls) hook(done, total int64) { *p = append(*p, [2]int64{done, total}) }

// check wants the first report at 0 and the last at total, every one of total, and done never
// going back.
func (p progressCalls) check(t *testing.T, total int64) {
	t.Helper()
	if len(p) < 2 || p[0] != [2]int64{0, total} || p[len(p)-1] != [2]int64{total, total} {
		t.Fatalf("progress reports %v: want the first at 0 and the last at %d, of %d", p, total, total)
	}
	for i, c := range p {
		if c[1] != total || (i > 0 && c[0] < p[i-1][0]) {
			t.Fatalf("progress reports %v: want done rising, of %d", p, total)
		}
	}
}

// TestExportAndVerifyReportProgress: both tell their hook, page by page, how many events of
// the part of the log they go through are done.
func TestExportAndVerifyReportProgress(t *testing.T) {
	l := newLedger(t, true)
	scenario(t, l)
	waitProjected(t)
	ctx := context.Background()

	var all progressCalls
	if _, err := audit.Export(ctx, l.store, &bytes.Buffer{}, audit.ExportOptions{PageSize: 4, Progress: all.hook}); err != nil {
		t.Fatal(err)
	}
	all.check(t, scenarioEvents)
	if len(all) < scenarioEvents/4 {
		t.Errorf("%d reports for %d pages", len(all), scenarioEvents/4)
	}

	recs, _ := exportLines(t, l, audit.ExportOptions{})
	var part progressCalls
	after, err := eventstore.ParseCheckpoint(recs[2].Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	until, err := eventstore.ParseCheckpoint(recs[9].Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	opts := audit.ExportOptions{After: after, Until: until, PageSize: 3, Progress: part.hook}
	if _, err := audit.Export(ctx, l.store, &bytes.Buffer{}, opts); err != nil {
		t.Fatal(err)
	}
	part.check(t, 7)

	var verified progressCalls
	rep, err := audit.Verify(ctx, l.store, audit.VerifyOptions{PageSize: 5, Progress: verified.hook})
	if err != nil {
		t.Fatal(err)
	}
	verified.check(t, rep.Events)
}
