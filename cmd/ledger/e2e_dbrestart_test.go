package main

import (
	"net/http"
	"os/exec"
	"testing"
	"time"

	"github.com/ledger/ledger/internal/pgtest"
)

// PostgreSQL restarted during load: while it is down the API answers 503 quickly (no hang, no
// crash); afterwards the ledger recovers by itself, and every acknowledged command is in the log.
func TestFaultDatabaseRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a PostgreSQL server of its own")
	}
	pg := pgtest.StartCluster(t)
	// serve creates the database; migrate only applies migrations, so create it first.
	pg.Exec("CREATE DATABASE ledger")
	if out, err := exec.Command(ledgerBinary(t), "migrate", "--database-url", pg.URL("ledger")).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	p := startLedger(t, ledgerEnv(pg.URL("ledger"), t.TempDir()))
	c := newDrillClient(t, "outage", 6, p.base())
	c.loginAdmin(t, pg.URL("ledger"))
	stop := c.run()
	for round := range max(1, faultRounds()/2) {
		time.Sleep(faultTraffic())
		pg.Stop()
		// While the database is down: quick 503s with Retry-After, from reads and commands.
		var slowest time.Duration
		for range 10 {
			for _, path := range []string{"/api/info", "/api/buy/pen"} {
				began := time.Now()
				req, _ := http.NewRequest(http.MethodGet, p.base()+path, nil)
				req.Header.Set("Authorization", "Bearer "+c.toks[c.users[0]])
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("round %d: %s while the database is down: %v (the ledger must keep answering)", round, path, err)
				}
				resp.Body.Close()
				slowest = max(slowest, time.Since(began))
				if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
					t.Errorf("round %d: %s while the database is down: %d (Retry-After %q), want 503 with Retry-After",
						round, path, resp.StatusCode, resp.Header.Get("Retry-After"))
				}
			}
		}
		t.Logf("round %d: database down: slowest of 20 answers %v", round+1, slowest)
		if code, _, _ := c.request(http.MethodGet, "/api/ready", "", nil); code != http.StatusServiceUnavailable {
			t.Errorf("round %d: /api/ready is %d while the database is down", round+1, code)
		}
		pg.Start()
		took := waitUntil(t, "the ledger serves again", func() bool {
			code, _, _ := c.request(http.MethodGet, "/api/ready", "", nil)
			return code == http.StatusOK
		})
		t.Logf("round %d: ready again %v after the database came back", round+1, took)
	}
	time.Sleep(faultTraffic())
	stop()
	waitCaughtUp(t, p.base(), c.toks["admin"])
	c.checkAcknowledged(t, pg.URL("ledger"))
	bankInvariants(t, pg.URL("ledger"))
	auditVerify(t, pg.URL("ledger"))
}
