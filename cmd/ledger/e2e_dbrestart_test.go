package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cluster is a PostgreSQL server of the test's own, which it may stop and start at will.
type cluster struct {
	t       *testing.T
	bin     string
	dir     string
	port    int
	asOwner func(name string, args ...string) *exec.Cmd
}

// startCluster creates and starts a throwaway cluster with this machine's PostgreSQL binaries,
// or skips the test when there are none (or no user to run them as).
func startCluster(t *testing.T) *cluster {
	t.Helper()
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		t.Skipf("no PostgreSQL binaries (pg_config): %v", err)
	}
	c := &cluster{t: t, bin: strings.TrimSpace(string(out))}
	c.asOwner = exec.Command
	base := t.TempDir()
	if os.Geteuid() == 0 { // PostgreSQL refuses to run as root
		if _, err := user.Lookup("postgres"); err != nil {
			t.Skip("running as root without a postgres user to run a cluster as")
		}
		c.asOwner = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
		}
		if err := os.Chmod(base, 0o777); err != nil {
			t.Fatal(err)
		}
		// The temporary directory's parents must be traversable by the postgres user.
		for d := filepath.Dir(base); d != "/" && d != "."; d = filepath.Dir(d) {
			_ = os.Chmod(d, 0o755)
		}
	}
	c.dir = filepath.Join(base, "pg")
	if out, err := c.asOwner(filepath.Join(c.bin, "initdb"), "-D", c.dir, "-U", "postgres", "-A", "trust", "-E", "UTF8").CombinedOutput(); err != nil {
		t.Skipf("initdb: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	c.start()
	t.Cleanup(func() { _ = c.ctl("stop", "-m", "immediate").Run() })
	return c
}

func (c *cluster) ctl(args ...string) *exec.Cmd {
	return c.asOwner(filepath.Join(c.bin, "pg_ctl"), append([]string{"-D", c.dir}, args...)...)
}

func (c *cluster) start() {
	c.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", c.port, c.dir)
	if out, err := c.ctl("-w", "-t", "60", "-l", filepath.Join(c.dir, "log"), "-o", opts, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		c.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// stop stops the server at once: sessions are cut, as when a database fails over.
func (c *cluster) stop() {
	c.t.Helper()
	if out, err := c.ctl("-w", "-m", "immediate", "stop").CombinedOutput(); err != nil {
		c.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

func (c *cluster) url() string {
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(c.port) + "/ledger?sslmode=disable"
}

// PostgreSQL restarted during load: while it is down the API answers 503 quickly (no hang, no
// crash); afterwards the ledger recovers by itself, and every acknowledged command is in the log.
func TestFaultDatabaseRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a PostgreSQL server of its own")
	}
	pg := startCluster(t)
	cmd := exec.Command(ledgerBinary(t), "migrate", "--database-url", pg.url())
	// serve creates the database; migrate only applies migrations, so create it first.
	if out, err := exec.Command(filepath.Join(pg.bin, "createdb"), "-h", "127.0.0.1", "-p", strconv.Itoa(pg.port), "-U", "postgres", "ledger").CombinedOutput(); err != nil {
		t.Fatalf("createdb: %v\n%s", err, out)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	p := startLedger(t, ledgerEnv(pg.url(), t.TempDir()))
	c := newBankClient(drillUsers("outage", 6))
	c.setBases(p.base())
	c.login(t, c.users...)
	ensureAdmin(t, pg.url())
	c.login(t, "admin")
	stop := make(chan struct{})
	wg := c.run(stop)
	for round := range max(1, faultRounds()/2) {
		time.Sleep(faultTraffic())
		pg.stop()
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
		pg.start()
		took := waitUntil(t, "the ledger serves again", func() bool {
			code, _, _ := c.request(http.MethodGet, "/api/ready", "", nil)
			return code == http.StatusOK
		})
		t.Logf("round %d: ready again %v after the database came back", round+1, took)
	}
	time.Sleep(faultTraffic())
	close(stop)
	wg.Wait()
	waitCaughtUp(t, p.base(), c.toks["admin"])
	c.checkAcknowledged(t, pg.url())
	bankInvariants(t, pg.url())
	auditVerify(t, pg.url())
}
