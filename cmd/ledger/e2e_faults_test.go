package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/internal/pgtest"
)

// faultRounds is how many crashes a fault drill inflicts: LEDGER_FAULT_ROUNDS, default 5.
func faultRounds() int {
	if n, err := strconv.Atoi(os.Getenv("LEDGER_FAULT_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 5
}

// faultTraffic is how long each round of a fault drill runs traffic: LEDGER_FAULT_TRAFFIC,
// default 1s (make test-faults runs longer rounds).
func faultTraffic() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("LEDGER_FAULT_TRAFFIC")); err == nil && d > 0 {
		return d
	}
	return time.Second
}

// bankClient drives the bank workload over plain HTTP against whichever ledger is current,
// tolerating the connection errors a crash causes, and counts, per employee, the commands
// attempted, acknowledged (200) and refused (4xx).
type bankClient struct {
	hc    *http.Client
	bases atomic.Pointer[[]string]
	users []string
	toks  map[string]string

	mu                               sync.Mutex
	attempted, acked, refused, other map[string]map[string]int // user → op → count
}

func newBankClient(users []string) *bankClient {
	c := &bankClient{hc: &http.Client{Timeout: 10 * time.Second}, users: users, toks: map[string]string{},
		attempted: map[string]map[string]int{}, acked: map[string]map[string]int{},
		refused: map[string]map[string]int{}, other: map[string]map[string]int{}}
	for _, m := range []map[string]map[string]int{c.attempted, c.acked, c.refused, c.other} {
		for _, u := range users {
			m[u] = map[string]int{}
		}
	}
	return c
}

func (c *bankClient) setBases(bases ...string) { c.bases.Store(&bases) }

func (c *bankClient) base() string {
	b := *c.bases.Load()
	return b[rand.IntN(len(b))]
}

func (c *bankClient) request(method, path, token string, body any) (int, []byte, error) {
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, c.base()+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), err
}

// login makes every employee (and the admin) log in, retrying while no ledger answers.
func (c *bankClient) login(t *testing.T, names ...string) {
	t.Helper()
	for _, u := range names {
		deadline := time.Now().Add(time.Minute)
		for {
			code, body, err := c.request(http.MethodPost, "/api/auth", "", map[string]string{"username": u, "password": testPassword})
			if err == nil && code == http.StatusOK {
				var tok struct{ Token string }
				if err := json.Unmarshal(body, &tok); err != nil {
					t.Fatal(err)
				}
				c.toks[u] = tok.Token
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("login %s: %d %s %v", u, code, body, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// loginAdmin makes sure databaseURL has the admin, and logs it in.
func (c *bankClient) loginAdmin(t *testing.T, databaseURL string) {
	t.Helper()
	ensureAdmin(t, databaseURL)
	c.login(t, "admin")
}

// record counts one command u sent, by how it ended.
func (c *bankClient) record(u, op string, code int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.attempted[u][op]++
	switch {
	case err == nil && code == http.StatusOK:
		c.acked[u][op]++
	case err == nil && code == http.StatusBadRequest:
		c.refused[u][op]++ // not enough coin: decided, nothing written
	default:
		c.other[u][op]++ // the process died under it, or was down: unknown outcome
	}
}

// run sends commands from every employee until the returned stop, which waits for the
// commands in flight: purchases of cheap items and transfers of 1..5 coins to another
// employee.
func (c *bankClient) run() (stop func()) {
	stopping := make(chan struct{})
	var wg sync.WaitGroup
	for _, u := range c.users {
		wg.Go(func() {
			for {
				select {
				case <-stopping:
					return
				default:
				}
				op, path, method := "buy", "/api/buy/"+[]string{"pen", "cup", "socks"}[rand.IntN(3)], http.MethodGet
				var body any
				if rand.IntN(2) == 0 {
					to := c.users[rand.IntN(len(c.users))]
					if to == u {
						continue
					}
					op, path, method = "send", "/api/sendCoin", http.MethodPost
					body = map[string]any{"toUser": to, "amount": 1 + rand.IntN(5)}
				}
				code, _, err := c.request(method, path, c.toks[u], body)
				c.record(u, op, code, err)
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	return func() { close(stopping); wg.Wait() }
}

// checkAcknowledged checks that every acknowledged command is in the log and that nothing is
// in it that was not attempted.
func (c *bankClient) checkAcknowledged(t *testing.T, databaseURL string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	total := 0
	for _, u := range c.users {
		var buys, sends int
		if err := conn.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE e.event_type = 'ItemPurchased'), count(*) FILTER (WHERE e.event_type = 'CoinsSent')
			FROM users us JOIN events e ON e.stream_id = 'account-' || us.account_id
			WHERE us.username = $1`, u).Scan(&buys, &sends); err != nil {
			t.Fatal(err)
		}
		for op, inLog := range map[string]int{"buy": buys, "send": sends} {
			acked, most := c.acked[u][op], c.attempted[u][op]-c.refused[u][op]
			total += acked
			if inLog < acked || inLog > most {
				t.Errorf("%s %s: %d in the log, %d acknowledged, at most %d possible", u, op, inLog, acked, most)
			}
		}
	}
	if total == 0 {
		t.Fatal("no command was acknowledged: the drill proved nothing")
	}
	t.Logf("%d acknowledged commands, all in the log", total)
}

func drillUsers(prefix string, n int) []string {
	users := make([]string, n)
	for i := range users {
		users[i] = uniq(fmt.Sprintf("%s%d", prefix, i))
	}
	return users
}

// newDrillClient is a bank client for n new employees named after prefix, logged in through
// bases.
func newDrillClient(t *testing.T, prefix string, n int, bases ...string) *bankClient {
	t.Helper()
	c := newBankClient(drillUsers(prefix, n))
	c.setBases(bases...)
	c.login(t, c.users...)
	return c
}

// killRounds kills p faultRounds() times, each after traffic for pause(round), and starts a
// new process on env in its place for c to talk to; it returns the last one.
func killRounds(t *testing.T, c *bankClient, p *ledgerProc, env []string, pause func(round int) time.Duration) *ledgerProc {
	t.Helper()
	for round := range faultRounds() {
		time.Sleep(pause(round))
		p.kill()
		t.Logf("round %d: killed pid %d", round+1, p.pid())
		p = startLedger(t, env)
		c.setBases(p.base())
	}
	return p
}

// kill -9 of the server, again and again, during a concurrent bank workload: afterwards every
// acknowledged command is in the log, no transfer is half written, no balance is negative, coins
// are conserved, and the read models equal the fold of the log.
func TestFaultKillDuringTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("crashes the real binary")
	}
	env := ledgerEnv(db.URL, t.TempDir())
	p := startLedger(t, env)
	c := newDrillClient(t, "crash", 8, p.base())
	c.loginAdmin(t, db.URL)
	stop := c.run()
	p = killRounds(t, c, p, env, func(int) time.Duration { return faultTraffic()/2 + rand.N(faultTraffic()) })
	time.Sleep(faultTraffic())
	stop()
	waitCaughtUp(t, p.base(), c.toks["admin"])
	c.checkAcknowledged(t, db.URL)
	bankInvariants(t, db.URL)
	auditVerify(t, db.URL)
}

// leaseHolders returns the pid of the ledger process holding each projection lease.
func leaseHolders(t *testing.T) map[string]int {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `
		SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1279607891
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	if err != nil {
		t.Fatal(err)
	}
	holders := map[string]int{}
	var app string
	if _, err := pgx.ForEachRow(rows, []any{&app}, func() error {
		// "ledger serve <pid> <tag>": the tag tells apart processes whose pids repeat.
		f := strings.Fields(app)
		if len(f) != 4 || f[0] != "ledger" || f[1] != "serve" {
			return fmt.Errorf("lease held by %q, not a ledger serve process", app)
		}
		pid, err := strconv.Atoi(f[2])
		if err != nil {
			return fmt.Errorf("lease holder %q: %w", app, err)
		}
		holders[app] = pid
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return holders
}

// Three replicas share the database under load; the one running the projections is killed:
// another takes them over, the read models keep up, and nothing is applied twice or missed.
func TestFaultReplicaTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three real processes")
	}
	env := ledgerEnv(db.URL, t.TempDir())
	procs := []*ledgerProc{startLedger(t, env), startLedger(t, env), startLedger(t, env)}
	c := newDrillClient(t, "replica", 6, procs[0].base(), procs[1].base(), procs[2].base())
	c.loginAdmin(t, db.URL)
	stop := c.run()
	time.Sleep(faultTraffic())

	var holder *ledgerProc
	waitUntil(t, "one replica holds the projection leases", func() bool {
		pids := leaseHolders(t)
		if len(pids) != 1 {
			return false
		}
		for _, pid := range pids {
			for _, p := range procs {
				if p.pid() == pid {
					holder = p
				}
			}
		}
		return holder != nil
	})
	var rest []string
	for _, p := range procs {
		if p != holder {
			rest = append(rest, p.base())
		}
	}
	c.setBases(rest...)
	killed := time.Now()
	holder.kill()
	took := waitUntil(t, "another replica takes the projections over", func() bool {
		pids := leaseHolders(t)
		if len(pids) != 1 {
			return false
		}
		for _, pid := range pids {
			return pid != holder.pid()
		}
		return false
	})
	t.Logf("projections taken over %v after the kill", took)
	// Lag: from a command's 200 to its account's version applied by every projection.
	var lags []time.Duration
	for range 20 {
		u := c.users[0]
		began := time.Now()
		code, _, err := c.request(http.MethodGet, "/api/buy/pen", c.toks[u], nil)
		c.record(u, "buy", code, err)
		if err != nil || code != http.StatusOK {
			continue
		}
		lags = append(lags, projectedWithin(t, u, began))
	}
	t.Logf("after the takeover (%v after the kill), lag of 20 purchases: %v", time.Since(killed).Round(time.Millisecond), lags)
	time.Sleep(faultTraffic())
	stop()
	admin := c.toks["admin"]
	waitCaughtUp(t, rest[0], admin)
	c.checkAcknowledged(t, db.URL)
	bankInvariants(t, db.URL)
	auditVerify(t, db.URL)
}

// projectedWithin waits until every active projection has applied user's stream head and
// returns how long after since that was.
func projectedWithin(t *testing.T, user string, since time.Time) time.Duration {
	t.Helper()
	for {
		var behind bool
		err := db.Pool.QueryRow(context.Background(), `
			SELECT EXISTS (
				SELECT 1 FROM users u JOIN streams s ON s.stream_id = 'account-' || u.account_id
				CROSS JOIN projection_versions v
				LEFT JOIN projection_heads h ON h.consumer_group = v.name || '_v' || v.active_version AND h.account_id = u.account_id
				WHERE u.username = $1 AND COALESCE(h.version, 0) < s.version)`, user).Scan(&behind)
		if err != nil {
			t.Fatal(err)
		}
		if !behind {
			return time.Since(since)
		}
		if time.Since(since) > time.Minute {
			t.Fatalf("%s's commands not projected within a minute", user)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitUntil polls cond until it holds and returns how long that took; the bound only guards
// against a hang.
func waitUntil(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > time.Minute {
			t.Fatalf("%s: not within a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(began)
}

// A projector that fails on one event is reported as failed (projection status, /api/ready),
// the other projections keep going, reads stay correct, and once the event is repaired it
// resumes from its checkpoint. The drill writes an event the inventory projection cannot
// store (a purchase of no items) straight into the log of a database of its own.
func TestFaultFailingProjection(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	ctx := context.Background()
	own := pgtest.New(t, "faults")
	p := startLedger(t, ledgerEnv(own.URL, t.TempDir()))
	c := newBankClient(drillUsers("poison", 3))
	c.setBases(p.base())
	c.login(t, c.users...)
	ensureAdmin(t, own.URL)
	c.login(t, "admin")
	victim, other := c.users[0], c.users[1]
	if code, body, err := c.request(http.MethodGet, "/api/buy/pen", c.toks[victim], nil); err != nil || code != http.StatusOK {
		t.Fatalf("buy: %d %s %v", code, body, err)
	}
	waitCaughtUp(t, p.base(), c.toks["admin"])

	// The poison: the victim's next version, appended as the event store would (head moved).
	var poison int64
	err := pgx.BeginFunc(ctx, own.Pool, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `
			WITH acc AS (SELECT 'account-' || account_id AS stream FROM users WHERE username = $1),
			     head AS (UPDATE streams s SET version = s.version + 1 FROM acc WHERE s.stream_id = acc.stream RETURNING s.stream_id, s.version)
			INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, payload, metadata, recorded_at, hash)
			SELECT stream_id, version, gen_random_uuid(), 'ItemPurchased', 1, '{"item":"pen","price":10,"quantity":0}', '{}', now(), decode(repeat('00', 32), 'hex')
			FROM head RETURNING global_position`, victim).Scan(&poison)
	})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "inventory reported failed", func() bool {
		st, err := projectionStatus(p.base(), c.toks["admin"])
		if err != nil {
			return false
		}
		for _, s := range st {
			if s.Name == "inventory" && s.State == "failed" && s.FailedPosition != nil && *s.FailedPosition == poison {
				return true
			}
		}
		return false
	})
	if code, _, _ := c.request(http.MethodGet, "/api/ready", "", nil); code != http.StatusServiceUnavailable {
		t.Errorf("/api/ready is %d while a projection is failed, want 503", code)
	}
	// The others keep going, and reads stay correct: another employee's purchase is projected
	// by balance and history and read back at once.
	if code, body, err := c.request(http.MethodGet, "/api/buy/cup", c.toks[other], nil); err != nil || code != http.StatusOK {
		t.Fatalf("buy while inventory is failed: %d %s %v", code, body, err)
	}
	var in info
	code, body, err := c.request(http.MethodGet, "/api/info", c.toks[other], nil)
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &in) != nil || in.items()["cup"] != 1 || in.Coins != 980 {
		t.Fatalf("info while inventory is failed: %d %s %v", code, body, err)
	}
	st, _ := projectionStatus(p.base(), c.toks["admin"])
	for _, s := range st {
		if s.Name != "inventory" && (s.State != "live") {
			t.Errorf("%s is %s while only inventory should have failed", s.Name, s.State)
		}
	}

	// The repair: the purchase is corrected in place (as an operator would, outside the
	// append-only guard); the projection resumes from its checkpoint.
	if _, err := own.Pool.Exec(ctx, `ALTER TABLE events DISABLE TRIGGER USER;
		UPDATE events SET payload = '{"item":"pen","price":10,"quantity":1}' WHERE global_position = `+strconv.FormatInt(poison, 10)+`;
		ALTER TABLE events ENABLE TRIGGER USER`); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, p.base(), c.toks["admin"])
	waitUntil(t, "/api/ready is 200 again", func() bool {
		code, _, _ := c.request(http.MethodGet, "/api/ready", "", nil)
		return code == http.StatusOK
	})
	code, body, err = c.request(http.MethodGet, "/api/info", c.toks[victim], nil)
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &in) != nil || in.items()["pen"] != 2 {
		t.Fatalf("the victim's info after the repair: %d %s %v", code, body, err)
	}
}
