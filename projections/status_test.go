package projections_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ledger/ledger/projections"
)

// The status statement counts the events after each checkpoint through the log's index and
// without JIT, whatever the planner guesses of how far behind a reader is (ADR 17): otherwise
// a scan of the whole log, or a second of compiling, for every status page.
func TestStatusCountsThroughTheIndexWithoutJIT(t *testing.T) {
	w := newWorld(t)
	w.traffic(100)
	w.runner(projections.Config{})
	w.waitCaughtUp()
	ctx := context.Background()
	plan, err := projections.StatusPlan(ctx, db.Pool, true)
	if err != nil {
		t.Fatal(err)
	}
	if scans := seqScans(t, plan); scans["events"] {
		t.Errorf("the status statement scans the events table:\n%s", plan)
	}
	if strings.Contains(plan, `"JIT"`) {
		t.Errorf("the status statement is compiled:\n%s", plan)
	}
	// Without the settings the same statement scans the log and is compiled: the test sees
	// what it guards (where the server has JIT).
	bare, err := projections.StatusPlan(ctx, db.Pool, false)
	if err != nil {
		t.Fatal(err)
	}
	if !seqScans(t, bare)["events"] && !strings.Contains(bare, `"JIT"`) {
		t.Errorf("without the settings the statement neither scans the log nor is compiled: the test guards nothing\n%s", bare)
	}
	if _, err := projections.Statuses(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
}

// seqScans returns the tables an EXPLAIN (FORMAT JSON) plan reads with a sequential scan.
func seqScans(t *testing.T, plan string) map[string]bool {
	t.Helper()
	type node struct {
		NodeType string `json:"Node Type"`
		Relation string `json:"Relation Name"`
		Plans    []node `json:"Plans"`
	}
	var doc []struct {
		Plan node `json:"Plan"`
	}
	if err := json.Unmarshal([]byte(plan), &doc); err != nil || len(doc) != 1 {
		t.Fatalf("plan %q: %v", plan, err)
	}
	out := map[string]bool{}
	var walk func(n node)
	walk = func(n node) {
		if n.NodeType == "Seq Scan" {
			out[n.Relation] = true
		}
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(doc[0].Plan)
	return out
}
