package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ledger/ledger/internal/natstest"
	"github.com/ledger/ledger/internal/pgtest"
)

// TestSmokeAgainstTheBinary builds the ledger, lets the tool start it on a database of the
// test's own, runs the smoke profile for three seconds at a low rate, and checks the report:
// every operation ran, nothing failed, lag was measured (to the read models, and to JetStream,
// where the server relays its events), and the bank invariant holds. It asserts no latency:
// the machine may be busy.
func TestSmokeAgainstTheBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ledger binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nats := natstest.Start(t, "")
	var res Result
	report := runAgainstTheBinary(ctx, t, &res,
		"--profile", "smoke", "--duration", "3s", "--rate", "20", "--users", "40",
		"--lag-sample-every", "1", "--seed", "7", "--nats-url", nats.URL)

	if res.Profile != "smoke" || len(res.Phases) != 1 || res.Interrupted {
		t.Fatalf("result: profile %q, %d phases, interrupted %v", res.Profile, len(res.Phases), res.Interrupted)
	}
	ph := res.Phases[0]
	if ph.Scheduled != 60 || ph.Sent != ph.Scheduled || ph.Dropped != 0 {
		t.Fatalf("scheduled %d, sent %d, dropped %d; want 60 sent", ph.Scheduled, ph.Sent, ph.Dropped)
	}
	if ph.Total.Errors != 0 || ph.ErrorRate != 0 {
		t.Fatalf("%d errors: %+v", ph.Total.Errors, ph.Total.ErrorsBy)
	}
	for _, o := range ph.Ops {
		if o.Requests == 0 || o.OK+o.NotEnoughCoin != o.Requests {
			t.Errorf("%s: %d requests, %d ok, %d not enough coin", o.Op, o.Requests, o.OK, o.NotEnoughCoin)
		}
	}
	if ph.Total.Requests != ph.Sent || ph.Total.Latency.Count != int(ph.Sent) {
		t.Errorf("total %+v does not account for the %d requests sent", ph.Total, ph.Sent)
	}
	if ph.Lag == nil || ph.Lag.Count == 0 || ph.Lag.Failed != 0 || ph.Lag.TimedOut != 0 {
		t.Errorf("projection lag not measured: %+v", ph.Lag)
	}
	if r := ph.RelayLag; r == nil || ph.Lag == nil || r.Count != ph.Lag.Count || r.Failed != 0 || r.TimedOut != 0 || r.Skipped != 0 {
		t.Errorf("JetStream lag not measured on every sampled command: %+v (projection lag %+v)", r, ph.Lag)
	}
	if ph.Server == nil || ph.Server.Error != "" || ph.Server.RSSMaxMiB <= 0 {
		t.Errorf("server resources not measured: %+v", ph.Server)
	}
	inv := res.Invariant
	if inv == nil || !inv.Holds {
		t.Fatalf("bank invariant: %+v", inv)
	}
	if inv.Accounts != 40 || inv.Granted != 40*1000 {
		t.Errorf("invariant saw %d accounts granted %d coins, want the 40 seeded with 1000 each", inv.Accounts, inv.Granted)
	}
	if !strings.Contains(report, "bank invariant: HOLDS") {
		t.Error("the printed report does not show the invariant")
	}
}

// ledgerAndDatabase builds the ledger binary into a temporary folder and creates a database of
// the test's own: what a run of the tool against the real binary needs.
func ledgerAndDatabase(ctx context.Context, t *testing.T) (dir, bin string, db *pgtest.Database) {
	t.Helper()
	dir = t.TempDir()
	bin = filepath.Join(dir, "ledger")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "../cmd/ledger").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir, bin, pgtest.New(t, "loadtest")
}

// runAgainstTheBinary runs the tool with args against the ledger binary on a database of the
// test's own (see ledgerAndDatabase). A failed run fails the test with the tool's progress and
// the server's log; the result file of one that finished is decoded into res. It returns the
// printed report.
func runAgainstTheBinary(ctx context.Context, t *testing.T, res any, args ...string) (report string) {
	t.Helper()
	dir, bin, db := ledgerAndDatabase(ctx, t)
	out := filepath.Join(dir, "result.json")
	serverLog := filepath.Join(dir, "server.log")
	var stdout, stderr bytes.Buffer
	err := run(ctx, slices.Concat(args, []string{
		"--server-bin", bin, "--database-url", db.URL, "--server-log", serverLog, "--out", out,
	}), &stdout, &stderr)
	t.Logf("report:\n%s", stdout.String())
	if err != nil {
		log, _ := os.ReadFile(serverLog)
		t.Fatalf("run: %v\nprogress:\n%s\nserver log:\n%s", err, stderr.String(), log)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, res); err != nil {
		t.Fatalf("result file: %v", err)
	}
	return stdout.String()
}
