package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ledger/ledger/internal/pgtest"
)

// standbySetup is a throwaway primary with a hot standby (streaming replication), the ledger's
// database on them, and `ledger serve` processes reading on the standby.
type standbySetup struct {
	primary, standby *pgtest.Cluster
	url              string // the ledger's database on the primary
	procs            []*ledgerProc
}

func startStandbySetup(t *testing.T, procs int, env ...string) *standbySetup {
	t.Helper()
	if testing.Short() {
		t.Skip("runs PostgreSQL servers of its own and the real binary")
	}
	primary := pgtest.StartCluster(t)
	s := &standbySetup{primary: primary, standby: primary.StartStandby(t)}
	s.url = primary.CreateDatabase("ledger")
	// The standby has the database once it has replayed its creation: until then the ledger
	// would find it missing and read on the primary for a while, which is not what these
	// tests are about.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		conn, err := pgx.Connect(context.Background(), s.standby.URL("ledger"))
		if err == nil {
			_ = conn.Close(context.Background())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby never had the database: %v", err)
		}
	}
	e := append(ledgerEnv(s.url, t.TempDir()), "APP_READ_REPLICA_URLS="+s.standby.URL("ledger"),
		"APP_PUBLIC_METRICS=true",
		// The race detector on a busy machine: this is about where reads go, not about the
		// request deadline (see TestE2EStalledDatabase).
		"APP_REQUEST_TIMEOUT=20s")
	e = append(e, env...)
	for range procs {
		s.procs = append(s.procs, startLedger(t, e))
	}
	return s
}

func (s *standbySetup) bases() []string {
	var out []string
	for _, p := range s.procs {
		out = append(out, p.base())
	}
	return out
}

// reads sums, over every process, ledger_reads_total by target and by reason.
func (s *standbySetup) reads(t *testing.T) (onStandby, onPrimary float64, by map[string]float64) {
	t.Helper()
	by = map[string]float64{}
	for _, p := range s.procs {
		m := scrapeMetrics(t, p.base()+"/metrics")
		for _, reason := range []string{"replayed", "after_wait"} {
			n, _ := m.sum("ledger_reads_total", map[string]string{"target": "standby", "reason": reason})
			onStandby += n
			by[reason] += n
		}
		for _, reason := range []string{"wait_timeout", "unavailable", "position_unknown", "standby_failed"} {
			n, _ := m.sum("ledger_reads_total", map[string]string{"target": "primary", "reason": reason})
			onPrimary += n
			by[reason] += n
		}
	}
	return onStandby, onPrimary, by
}

// rywLoad is a bank workload that checks read-your-writes as it goes: each employee sends
// commands (purchases, transfers) to any process, and readers read any employee's /api/info on
// any process; every read must answer 200 and show at least every purchase and transfer of that
// employee acknowledged before the read began.
type rywLoad struct {
	*bankClient
	received                 map[string]*atomic.Int64 // transfers acknowledged to each employee
	bought, sent             map[string]*atomic.Int64
	reads, failures, behinds atomic.Int64
	firstProblem             atomic.Pointer[string]
}

func newRYWLoad(t *testing.T, s *standbySetup, users int) *rywLoad {
	t.Helper()
	l := &rywLoad{bankClient: newDrillClient(t, "ryw", users, s.bases()...), received: map[string]*atomic.Int64{},
		bought: map[string]*atomic.Int64{}, sent: map[string]*atomic.Int64{}}
	for _, u := range l.users {
		l.received[u], l.bought[u], l.sent[u] = new(atomic.Int64), new(atomic.Int64), new(atomic.Int64)
	}
	return l
}

func (l *rywLoad) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.firstProblem.CompareAndSwap(nil, &msg)
}

// run sends commands from every employee and reads with readers goroutines until the
// returned stop, which waits for the requests in flight.
func (l *rywLoad) run(readers int) (stop func()) {
	stopping := make(chan struct{})
	var wg sync.WaitGroup
	for _, u := range l.users {
		wg.Go(func() {
			for {
				select {
				case <-stopping:
					return
				default:
				}
				op, path, method := "buy", "/api/buy/pen", http.MethodGet
				var body any
				to := l.users[rand.IntN(len(l.users))]
				if rand.IntN(2) == 0 && to != u {
					op, path, method = "send", "/api/sendCoin", http.MethodPost
					body = map[string]any{"toUser": to, "amount": 1}
				}
				code, _, err := l.request(method, path, l.toks[u], body)
				l.record(u, op, code, err)
				if err == nil && code == http.StatusOK {
					if op == "buy" {
						l.bought[u].Add(1)
					} else {
						l.sent[u].Add(1)
						l.received[to].Add(1)
					}
				}
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-stopping:
					return
				default:
				}
				l.readOnce(l.users[rand.IntN(len(l.users))])
			}
		})
	}
	return func() { close(stopping); wg.Wait() }
}

// readOnce reads u's info on any process and checks it against what was acknowledged before.
func (l *rywLoad) readOnce(u string) {
	bought, sent, received := l.bought[u].Load(), l.sent[u].Load(), l.received[u].Load()
	code, body, err := l.request(http.MethodGet, "/api/info", l.toks[u], nil)
	l.reads.Add(1)
	if err != nil || code != http.StatusOK {
		l.failures.Add(1)
		l.problem("info of %s: %d %s %v", u, code, body, err)
		return
	}
	var in info
	if err := json.Unmarshal(body, &in); err != nil {
		l.failures.Add(1)
		l.problem("info of %s: %v: %s", u, err, body)
		return
	}
	var pens int64
	for _, h := range in.Inventory {
		pens += h.Quantity
	}
	if pens < bought || int64(len(in.CoinHistory.Sent)) < sent || int64(len(in.CoinHistory.Received)) < received {
		l.behinds.Add(1)
		l.problem("info of %s shows %d purchases, %d sent, %d received; acknowledged before the read: %d, %d, %d",
			u, pens, len(in.CoinHistory.Sent), len(in.CoinHistory.Received), bought, sent, received)
	}
}

// check fails the test on any failed or stale read, and checks the log and the bank.
func (l *rywLoad) check(t *testing.T, s *standbySetup) {
	t.Helper()
	t.Logf("%d reads, %d failed, %d missed an acknowledged command", l.reads.Load(), l.failures.Load(), l.behinds.Load())
	if p := l.firstProblem.Load(); p != nil {
		t.Errorf("first problem: %s", *p)
	}
	if l.reads.Load() == 0 {
		t.Fatal("no reads: the test proved nothing")
	}
	l.checkAcknowledged(t, s.url)
	bankInvariants(t, s.url)
}

// Two processes read on the standby under concurrent commands: every read after a 200 shows
// that command, whichever process served either; the bank balances; most reads went to the
// standby, and some of them did.
func TestStandbyReadYourWrites(t *testing.T) {
	s := startStandbySetup(t, 2)
	l := newRYWLoad(t, s, 8)
	stop := l.run(8)
	time.Sleep(3 * faultTraffic())
	stop()
	l.check(t, s)

	// The audit reads are read queries too: an auditor sees a purchase at once, on any process.
	ensureAdmin(t, s.url)
	admin := newAPIClient(t, s.procs[0].base()).login(t, "admin")
	// Two employees of their own: the load may have spent the others' coins.
	auditees := []string{uniq("auditee"), uniq("auditee")}
	toks := map[string]string{}
	for _, u := range auditees {
		toks[u] = newAPIClient(t, s.procs[0].base()).login(t, u)
	}
	for round := range 10 {
		u := auditees[round%len(auditees)]
		buyer := newAPIClient(t, s.procs[round%2].base())
		wantOK(t, buyer.buy(t, toks[u], "pen"))
		events := newAPIClient(t, s.procs[(round+1)%2].base()).allAccountEvents(t, admin, u, 1000)
		if last := events[len(events)-1]; last.Type != "ItemPurchased" {
			t.Errorf("round %d: the last event of %s an auditor reads right after a purchase is %s", round, u, last.Type)
		}
	}

	onStandby, onPrimary, by := s.reads(t)
	t.Logf("routed reads: %v on the standby, %v on the primary: %v", onStandby, onPrimary, by)
	if onStandby == 0 {
		t.Errorf("no read went to the standby: %v", by)
	}
}

// The standby replays commits 300ms late: reads still show every acknowledged command, because
// past the bound they go to the primary, and the metrics say so.
func TestStandbySlowedReadsGoToThePrimary(t *testing.T) {
	s := startStandbySetup(t, 1)
	s.standby.Set("recovery_min_apply_delay", "300ms")
	l := newRYWLoad(t, s, 6)
	stop := l.run(4)
	time.Sleep(2 * faultTraffic())
	stop()
	l.check(t, s)
	onStandby, onPrimary, by := s.reads(t)
	t.Logf("routed reads: %v on the standby, %v on the primary: %v", onStandby, onPrimary, by)
	if by["wait_timeout"] == 0 {
		t.Errorf("no read waited past the bound for the slowed standby: %v", by)
	}
	if onPrimary <= onStandby {
		t.Errorf("most reads should have gone to the primary past a slowed standby: %v", by)
	}
	m := scrapeMetrics(t, s.procs[0].base()+"/metrics")
	if n, _ := m.sum("ledger_read_position_wait_seconds", map[string]string{"target": "primary"}); n == 0 {
		t.Errorf("no position wait recorded for reads that ended on the primary")
	}
}

// The standby is stopped under load, then started: no read fails, and reads return to it.
func TestStandbyStoppedUnderLoad(t *testing.T) {
	s := startStandbySetup(t, 2)
	l := newRYWLoad(t, s, 6)
	stop := l.run(6)
	time.Sleep(faultTraffic())
	s.standby.Stop()
	time.Sleep(faultTraffic())
	stoppedStandby, _, stoppedBy := s.reads(t)
	s.standby.Start()
	waitUntil(t, "reads return to the restarted standby", func() bool {
		n, _, _ := s.reads(t)
		return n > stoppedStandby+20
	})
	time.Sleep(faultTraffic())
	stop()
	l.check(t, s)
	_, _, by := s.reads(t)
	t.Logf("routed reads while stopped: %v; at the end: %v", stoppedBy, by)
	if stoppedBy["unavailable"]+stoppedBy["standby_failed"]+stoppedBy["wait_timeout"] == 0 {
		t.Errorf("no read went around the stopped standby: %v", stoppedBy)
	}
}

// A standby that keeps up serves most reads: counted by the metrics, not timed.
func TestStandbyServesMostReads(t *testing.T) {
	s := startStandbySetup(t, 1, "APP_LOG_LEVEL=info")
	l := newRYWLoad(t, s, 4)
	stop := l.run(4)
	time.Sleep(2 * faultTraffic())
	stop()
	l.check(t, s)
	onStandby, onPrimary, by := s.reads(t)
	fraction := onStandby / (onStandby + onPrimary)
	t.Logf("%.1f%% of %v routed reads on the standby: %v", 100*fraction, onStandby+onPrimary, by)
	if fraction < 0.5 {
		for _, line := range strings.Split(s.procs[0].stderr.String(), "\n") {
			if strings.Contains(line, "standby") {
				t.Log(line)
			}
		}
	}
	if fraction < 0.5 {
		t.Errorf("%.1f%% of reads on a standby that keeps up, want most: %v", 100*fraction, by)
	}
}

// --read-replica is repeatable and replaces APP_READ_REPLICA_URLS; a URL that does not parse or
// a wait out of range stops the start, and the message never shows the URL (it may hold a
// password).
func TestServeReadReplicaConfig(t *testing.T) {
	t.Setenv("APP_READ_REPLICA_URLS", "postgres://a/ledger, postgres://b/ledger")
	cfg, err := parseServeConfig(t)
	if err != nil || len(cfg.ReadReplicas) != 2 || cfg.ReadReplicas[1] != "postgres://b/ledger" || cfg.ReadReplicaWait != 50*time.Millisecond {
		t.Errorf("from the environment: %q, wait %v, %v", cfg.ReadReplicas, cfg.ReadReplicaWait, err)
	}
	cfg, err = parseServeConfig(t, "--read-replica", "postgres://c/ledger", "--read-replica", "postgres://d/ledger", "--read-replica-wait", "0")
	if err != nil || fmt.Sprint(cfg.ReadReplicas) != "[postgres://c/ledger postgres://d/ledger]" || cfg.ReadReplicaWait != 0 {
		t.Errorf("flags: %q, wait %v, %v", cfg.ReadReplicas, cfg.ReadReplicaWait, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--read-replica", "postgres://u:s3cret@h:notaport/ledger"}, "read replica 1 of 1"},
		{[]string{"--read-replica-wait", "2s"}, "APP_READ_REPLICA_WAIT"},
		{[]string{"--read-replica-wait", "-1ms"}, "APP_READ_REPLICA_WAIT"},
	} {
		_, err := parseServeConfig(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%v: got %v, want an error naming %q and no password", tc.args, err, tc.want)
		}
	}
}
