package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/projections"
)

// builtBinary is the ledger binary built once for the tests that run it as a process.
var builtBinary struct {
	once sync.Once
	path string
	err  error
}

// ledgerBinary builds the real binary (once per test run) and returns its path.
func ledgerBinary(t *testing.T) string {
	t.Helper()
	builtBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "ledger-e2e-bin")
		if err != nil {
			builtBinary.err = err
			return
		}
		builtBinary.path = filepath.Join(dir, "ledger")
		if out, err := exec.Command("go", "build", "-o", builtBinary.path, ".").CombinedOutput(); err != nil {
			builtBinary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if builtBinary.err != nil {
		t.Fatal(builtBinary.err)
	}
	return builtBinary.path
}

// ledgerProc is one `ledger serve` process.
type ledgerProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string
	// adminAddr is the admin listener's address (pprof, /metrics), once announced.
	adminAddr atomic.Pointer[string]
	exited    chan error
	stderr    *lockedBuffer
	done      bool
}

// ledgerEnv is the environment of processes serving databaseURL with keys in keyDir.
func ledgerEnv(databaseURL, keyDir string) []string {
	return append(os.Environ(),
		"APP_POSTGRES_URL="+databaseURL,
		"APP_JWT_SIGNATURE_KEY_FILE="+filepath.Join(keyDir, "signing.pem"),
		"APP_JWT_VERIFICATION_KEY_FILE="+filepath.Join(keyDir, "verification.pem"),
		"APP_LOG_LEVEL=warn",
		"APP_DB_MAX_CONNS=8",
		"APP_ADMIN_ADDR=127.0.0.1:0", // several processes at once: no fixed admin port
	)
}

// startLedger starts `ledger serve` on a free port and waits until it listens.
func startLedger(t *testing.T, env []string) *ledgerProc {
	t.Helper()
	cmd := exec.Command(ledgerBinary(t), "serve", "--port", "0", "--host", "127.0.0.1")
	cmd.Env = env
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &ledgerProc{t: t, cmd: cmd, exited: make(chan error, 1), stderr: &lockedBuffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "ledger listening on http://"); ok {
				addrc <- addr
			}
			if addr, ok := strings.CutPrefix(sc.Text(), "ledger admin (pprof, metrics) on http://"); ok {
				p.adminAddr.Store(&addr)
			}
		}
		close(addrc)
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			out := p.stderr.String()
			if len(out) > 10_000 {
				out = "…" + out[len(out)-10_000:]
			}
			t.Logf("stderr of ledger serve (pid %d):\n%s", cmd.Process.Pid, out)
		}
	})
	select { // a bound against a hang, not a performance expectation
	case a, ok := <-addrc:
		if !ok {
			t.Fatalf("ledger serve exited before listening:\n%s", p.stderr.String())
		}
		p.addr = a
	case <-time.After(2 * time.Minute):
		t.Fatal("ledger serve never announced its address")
	}
	return p
}

func (p *ledgerProc) base() string { return "http://" + p.addr }

func (p *ledgerProc) pid() int { return p.cmd.Process.Pid }

// kill ends the process with SIGKILL: no shutdown, no draining, as a crash.
func (p *ledgerProc) kill() {
	if p.done {
		return
	}
	p.done = true
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// terminate sends SIGTERM and returns how the process exited; a process still running after
// within is killed and reported.
func (p *ledgerProc) terminate(within time.Duration) error {
	if p.done {
		return errors.New("ledger serve was already stopped")
	}
	p.done = true
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-p.exited:
		return err
	case <-time.After(within):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("ledger serve did not exit within %v of SIGTERM", within)
	}
}

// waitCaughtUp polls /api/admin/projections until every projection has applied the whole log.
func waitCaughtUp(t *testing.T, base, adminToken string) []projections.Status {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := projectionStatus(base, adminToken)
		if err == nil {
			behind := int64(0)
			for _, s := range st {
				behind += s.EventsBehind
				if s.State == "failed" {
					behind++
				}
			}
			if behind == 0 && len(st) > 0 {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("projections not caught up: %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func projectionStatus(base, adminToken string) ([]projections.Status, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/api/admin/projections", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	var body struct{ Projections []projections.Status }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Projections, nil
}

// auditVerify runs `ledger audit verify` against databaseURL and fails the test unless it
// finds the log and the read models in agreement.
func auditVerify(t *testing.T, databaseURL string) {
	t.Helper()
	cmd := exec.Command(ledgerBinary(t), "audit", "verify")
	cmd.Env = append(os.Environ(), "APP_POSTGRES_URL="+databaseURL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ledger audit verify: %v\n%s", err, out)
	}
	t.Logf("ledger audit verify:\n%s", strings.TrimSpace(string(out)))
}

// bankInvariants checks, in one snapshot of databaseURL, what must hold whatever crashed: no
// transfer half without the other, no negative balance, and Σ coins + Σ spent == Σ granted.
func bankInvariants(t *testing.T, databaseURL string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var table string
	if err := conn.QueryRow(ctx, `SELECT 'balance_v' || active_version FROM projection_versions WHERE name = 'balance'`).Scan(&table); err != nil {
		t.Fatal(err)
	}
	var halves, negative int64
	var coins, spent, granted int64
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FROM (
				SELECT 1 FROM events WHERE event_type IN ('CoinsSent', 'CoinsReceived')
				GROUP BY convert_from(payload_bytes, 'UTF8')::jsonb->>'transferId' HAVING count(*) <> 2) broken`).Scan(&halves); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FILTER (WHERE coins < 0), COALESCE(sum(coins), 0) FROM `+pgx.Identifier{table}.Sanitize()).
			Scan(&negative, &coins); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			SELECT COALESCE(sum((convert_from(payload_bytes, 'UTF8')::jsonb->>'price')::bigint * (convert_from(payload_bytes, 'UTF8')::jsonb->>'quantity')::bigint) FILTER (WHERE event_type = 'ItemPurchased'), 0),
			       COALESCE(sum((convert_from(payload_bytes, 'UTF8')::jsonb->>'amount')::bigint) FILTER (WHERE event_type = 'CoinsGranted'), 0)
			FROM events`).Scan(&spent, &granted)
	})
	if err != nil {
		t.Fatal(err)
	}
	if halves != 0 {
		t.Errorf("%d transfers have one half without the other", halves)
	}
	if negative != 0 {
		t.Errorf("%d negative balances", negative)
	}
	if coins+spent != granted {
		t.Errorf("Σ coins %d + Σ spent %d = %d, Σ granted %d", coins, spent, coins+spent, granted)
	}
}
