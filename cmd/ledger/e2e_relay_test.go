package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/natstest"
	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/internal/relay"
	"github.com/ledger/ledger/internal/relay/relaytest"
	"github.com/ledger/ledger/projections"
)

// relayLedger gives a test a database of its own (the relay's checkpoint is per database), a
// NATS server of its own, and the environment of a ledger on that database relaying there.
func relayLedger(t *testing.T) (*pgtest.Database, *natstest.Server, []string) {
	t.Helper()
	own := pgtest.New(t, "relay")
	ns := natstest.Start(t, "")
	return own, ns, append(ledgerEnv(own.URL, t.TempDir()), "APP_NATS_URL="+ns.URL)
}

// relayRow returns the relay's row of a projection status.
func relayRow(st []projections.Status) (projections.Status, bool) {
	for _, s := range st {
		if s.Name == relay.Group {
			return s, true
		}
	}
	return projections.Status{}, false
}

// ledgerCLI runs the binary with env and args and returns its standard output.
func ledgerCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command(ledgerBinary(t), args...)
	cmd.Env = env
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ledger %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// tailProc is a running `ledger events tail` and the lines it printed.
type tailProc struct {
	args   []string
	lines  chan string
	stderr *lockedBuffer
}

// startTail starts `ledger events tail` with env and args; it is killed when the test ends.
func startTail(t *testing.T, env []string, args ...string) *tailProc {
	t.Helper()
	cmd := exec.Command(ledgerBinary(t), append([]string{"events", "tail"}, args...)...)
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &tailProc{args: args, lines: make(chan string, 1024), stderr: &lockedBuffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

// next returns the tail's next n lines.
func (p *tailProc) next(t *testing.T, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("ledger events tail %s ended after %d of %d lines: %s", strings.Join(p.args, " "), len(got), n, p.stderr.String())
			}
			got = append(got, l)
		case <-time.After(time.Minute): // a bound against a hang
			t.Fatalf("ledger events tail %s printed %d of %d lines: %s", strings.Join(p.args, " "), len(got), n, p.stderr.String())
		}
	}
	return got
}

// TestE2ERelay: the service with APP_NATS_URL publishes every event of the API's commands,
// once and in order, the bodies being the audit records; status, /api/admin/projections and
// /metrics list the relay; `ledger events tail` prints an employee's transfers as they
// happen; the stream deleted is created again with the whole history, and `ledger events
// republish --from-start` adds nothing to it; `ledger events tail --from-start` prints the
// whole log and `--from CHECKPOINT` the events after the checkpoint, then new ones.
func TestE2ERelay(t *testing.T) {
	own := pgtest.New(t, "relay")
	ns := natstest.Start(t, "")
	ts := startTestService(t, func(c *serveConfig) {
		c.DatabaseURL, c.NATSURL, c.LogLevel = own.URL, ns.URL, "info"
		c.AdminAddr = "127.0.0.1:0"
	})
	ensureAdmin(t, own.URL)
	api := ts.api
	alice, bob := uniq("alice"), uniq("bob")
	aliceTok, bobTok, admin := api.login(t, alice), api.login(t, bob), api.login(t, "admin")
	env := append(ledgerEnv(own.URL, t.TempDir()), "APP_NATS_URL="+ns.URL)

	// The tail, started before the transfers: it prints them as they come.
	tail := startTail(t, env, "--type", "CoinsSent", "--account", alice)
	time.Sleep(500 * time.Millisecond) // the tail's consumer starts at "new": give it time to exist

	for i := range 3 {
		wantOK(t, api.sendCoin(t, aliceTok, bob, i+1))
		wantOK(t, api.sendCoin(t, bobTok, alice, 1))
		wantOK(t, api.buy(t, aliceTok, "pen"))
	}
	for i, l := range tail.next(t, 3) {
		var r audit.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("tail line %q: %v", l, err)
		}
		var p struct{ Amount int64 }
		if r.Type != "CoinsSent" || json.Unmarshal(r.Payload, &p) != nil || p.Amount != int64(i+1) {
			t.Fatalf("tail line %d: %s", i+1, l)
		}
	}

	relaytest.WaitPublished(t, own.Pool)
	nc := ns.Connect()
	total := relaytest.CheckStream(t, nc, own.Pool)
	st, err := projectionStatus(api.base, admin)
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := relayRow(st); !ok || r.State != "live" || !r.Active || r.EventsBehind != 0 || r.ActiveVersion != 0 {
		t.Fatalf("relay status %+v in %+v", r, st)
	}
	m := scrapeMetrics(t, "http://"+ts.svc.adminAddr+"/metrics")
	m.want(t, "ledger_relay_active", nil, 1)
	m.want(t, "ledger_relay_nats_connected", nil, 1)
	m.want(t, "ledger_projection_active", map[string]string{"projection": relay.Group}, 1)
	m.want(t, "ledger_projection_events_behind", map[string]string{"projection": relay.Group}, 0)
	m.atLeast(t, "ledger_relay_events_published_total", nil, float64(total))
	if !strings.Contains(ts.logs.String(), "relay publishing to NATS") {
		t.Fatalf("log:\n%s", ts.logs.String())
	}
	out := ledgerCLI(t, env, "projections", "status")
	if !strings.Contains(out, relay.Group) || !strings.Contains(out, "RUNNING") {
		t.Fatalf("ledger projections status:\n%s", out)
	}

	// The stream deleted: the relay creates it again, says so, and publishes the log again.
	js, _ := nc.JetStream()
	if err := js.DeleteStream(relay.DefaultStream); err != nil {
		t.Fatal(err)
	}
	wantOK(t, api.buy(t, bobTok, "cup"))
	waitUntil(t, "the relay recreates the stream", func() bool { return strings.Contains(ts.logs.String(), "created again") })
	relaytest.WaitPublished(t, own.Pool)
	if n := relaytest.CheckStream(t, nc, own.Pool); n != total+1 {
		t.Fatalf("the recreated stream holds %d messages, want %d", n, total+1)
	}
	out = ledgerCLI(t, env, "events", "republish", "--from-start")
	if !strings.Contains(out, fmt.Sprintf("republished %d events", total+1)) {
		t.Fatalf("republish: %s", out)
	}
	if n := relaytest.CheckStream(t, nc, own.Pool); n != total+1 {
		t.Fatalf("after the republish the stream holds %d messages, want %d", n, total+1)
	}

	// Tails from the start and from a checkpoint print the log's events, each stream's in
	// order; from the checkpoint only those after it.
	logged := pgtest.ReadLogUntil(t, eventstore.New(own.Pool), eventstore.Checkpoint{}, 1000, total+1)
	from := logged[len(logged)/2].Checkpoint()
	fromStart := startTail(t, env, "--from-start")
	fromCheckpoint := startTail(t, env, "--from", from.String())
	relaytest.CheckRecords(t, own.Pool, eventstore.Checkpoint{}, fromStart.next(t, len(logged)))
	relaytest.CheckRecords(t, own.Pool, from, fromCheckpoint.next(t, len(logged)-len(logged)/2-1))
	// A new event is each tail's next line: the stream held everything else before it, so
	// nothing else was left to print.
	wantOK(t, api.buy(t, aliceTok, "cup"))
	relaytest.WaitPublished(t, own.Pool)
	msgs := relaytest.Messages(t, nc)
	newest := string(msgs[len(msgs)-1].Data)
	for _, tail := range []*tailProc{fromStart, fromCheckpoint} {
		if l := tail.next(t, 1)[0]; l != newest {
			t.Fatalf("ledger events tail %s printed\n%s\nwant the newest event\n%s", strings.Join(tail.args, " "), l, newest)
		}
	}
}

// TestE2EEventsRepublish: the stream lost while no relay runs (the ledger stopped), so that
// nothing but an operator can restore it: `ledger events republish --from-start` fills it
// with the whole log, and `--from CHECKPOINT` with exactly the events after the checkpoint;
// neither moves the relay's checkpoint.
func TestE2EEventsRepublish(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	ctx := context.Background()
	own, ns, env := relayLedger(t)
	p := startLedger(t, env)
	api := newAPIClient(t, p.base())
	alice, bob := uniq("alice"), uniq("bob")
	aliceTok, bobTok := api.login(t, alice), api.login(t, bob)
	for i := range 4 {
		wantOK(t, api.sendCoin(t, aliceTok, bob, i+1))
		wantOK(t, api.buy(t, bobTok, "pen"))
	}
	relaytest.WaitPublished(t, own.Pool)
	if err := p.terminate(time.Minute); err != nil {
		t.Fatal(err)
	}
	relayAt, err := projections.LoadCheckpoint(ctx, own.Pool, relay.Group)
	if err != nil {
		t.Fatal(err)
	}
	var total int
	if err := own.Pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	logged := pgtest.ReadLogUntil(t, eventstore.New(own.Pool), eventstore.Checkpoint{}, 1000, total)
	nc := ns.Connect()
	js, _ := nc.JetStream()
	lose := func() {
		t.Helper()
		if err := js.DeleteStream(relay.DefaultStream); err != nil {
			t.Fatal(err)
		}
	}

	lose()
	out := ledgerCLI(t, env, "events", "republish", "--from-start")
	if !strings.Contains(out, fmt.Sprintf("republished %d events", total)) {
		t.Fatalf("republish --from-start of %d events: %s", total, out)
	}
	if n := relaytest.CheckStream(t, nc, own.Pool); n != total {
		t.Fatalf("after republish --from-start the stream holds %d messages, want %d", n, total)
	}

	lose()
	from := logged[total/2].Checkpoint()
	after := total - total/2 - 1
	out = ledgerCLI(t, env, "events", "republish", "--from", from.String())
	if !strings.Contains(out, fmt.Sprintf("republished %d events", after)) {
		t.Fatalf("republish --from %s, %d events after it: %s", from, after, out)
	}
	if n := relaytest.CheckStreamAfter(t, nc, own.Pool, from); n != after {
		t.Fatalf("after republish --from %s the stream holds %d messages, want %d", from, n, after)
	}
	if at, err := projections.LoadCheckpoint(ctx, own.Pool, relay.Group); err != nil || at != relayAt {
		t.Fatalf("the relay's checkpoint is %s after the republishes (%v), was %s", at, err, relayAt)
	}
}

// TestE2ENATSDuplicateWindow: APP_NATS_DUPLICATE_WINDOW sets the de-duplication window of
// the stream the relay creates; a window shorter than a republish after a crash needs is
// refused at start, from the environment or the flag, with a message naming the setting.
func TestE2ENATSDuplicateWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	_, ns, env := relayLedger(t)
	startLedger(t, append(env, "APP_NATS_DUPLICATE_WINDOW=5m"))
	js, _ := ns.Connect().JetStream()
	var info *nats.StreamInfo
	waitUntil(t, "the relay creates the stream", func() bool {
		var err error
		info, err = js.StreamInfo(relay.DefaultStream)
		return err == nil
	})
	if info.Config.Duplicates != 5*time.Minute {
		t.Fatalf("the stream's duplicate window is %v, want 5m", info.Config.Duplicates)
	}

	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"environment", []string{"APP_NATS_DUPLICATE_WINDOW=1m"}, nil},
		{"flag", nil, []string{"--nats-duplicate-window", "1m"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a serve that starts would not end
			defer cancel()
			cmd := exec.CommandContext(ctx, ledgerBinary(t), append([]string{"serve", "--port", "0"}, tc.args...)...)
			cmd.Env = append(env, tc.env...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 ||
				!strings.Contains(string(out), "NATS duplicate window (APP_NATS_DUPLICATE_WINDOW) must be a duration of at least 2m0s") {
				t.Fatalf("serve with a duplicate window of 1m: %v\n%s", err, out)
			}
		})
	}
}

// TestE2EWithoutNATS: no APP_NATS_URL, no relay, said once; NATS unreachable, the service is
// ready and serves while the relay's status and log say what is wrong.
func TestE2EWithoutNATS(t *testing.T) {
	ts := startTestService(t, func(c *serveConfig) { c.LogLevel = "info" })
	if n := strings.Count(ts.logs.String(), "no NATS server configured"); n != 1 {
		t.Fatalf("said %d times that there is no relay:\n%s", n, ts.logs.String())
	}

	own := pgtest.New(t, "relay")
	ns := natstest.Start(t, "")
	ns.Stop()
	ts = startTestService(t, func(c *serveConfig) { c.DatabaseURL, c.NATSURL = own.URL, ns.URL }) // waits for /api/ready
	ensureAdmin(t, own.URL)
	admin, bob := ts.api.login(t, "admin"), ts.api.login(t, uniq("bob"))
	wantOK(t, ts.api.buy(t, bob, "pen"))
	var row projections.Status
	waitUntil(t, "the status names the unreachable server", func() bool {
		st, err := projectionStatus(ts.api.base, admin)
		if err != nil {
			return false
		}
		var ok bool
		row, ok = relayRow(st)
		return ok && row.State == "failed" && strings.Contains(row.LastError, "connect to NATS at "+ns.URL) && row.Active
	})
	if code := ts.api.do(t, http.MethodGet, "/api/ready", "", nil).Status; code != http.StatusOK {
		t.Fatalf("/api/ready is %d while NATS is away", code)
	}
	if !strings.Contains(ts.logs.String(), "events are not reaching NATS") {
		t.Fatalf("log:\n%s", ts.logs.String())
	}
	ns.Start()
	relaytest.WaitPublished(t, own.Pool)
	relaytest.CheckStream(t, ns.Connect(), own.Pool)
}

// relayHolder returns the pid of the process holding the relay's lease, 0 for none.
func relayHolder(t *testing.T, pool interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) int {
	t.Helper()
	var app string
	err := pool.QueryRow(context.Background(), `
		SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1279607891 AND l.objsubid = 2
		  AND l.objid = ((hashtext($1)::bigint + 4294967296) % 4294967296)::oid
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`, relay.Group).Scan(&app)
	if err == pgx.ErrNoRows {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscanf(app, "ledger serve %d", &pid); err != nil {
		t.Fatalf("relay lease held by %q: %v", app, err)
	}
	return pid
}

// kill -9 of the ledger while it publishes, again and again, under the bank workload: the
// stream ends up with every event once, each stream in order.
func TestFaultRelayKill(t *testing.T) {
	if testing.Short() {
		t.Skip("crashes the real binary")
	}
	own, ns, env := relayLedger(t)
	p := startLedger(t, env)
	c := newDrillClient(t, "relaykill", 8, p.base())
	stop := c.run()
	killRounds(t, c, p, env, func(round int) time.Duration { return faultTraffic()/2 + time.Duration(round)*faultTraffic()/10 })
	time.Sleep(faultTraffic())
	stop()
	relaytest.WaitPublished(t, own.Pool)
	n := relaytest.CheckStream(t, ns.Connect(), own.Pool)
	t.Logf("%d events, each once and in order, through %d kills", n, faultRounds())
}

// NATS stopped under load for a few seconds and started again: commands and reads go on,
// /api/ready stays 200, the lag shows in status and metrics, then the relay catches up with
// no gap and no duplicate.
func TestFaultRelayNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary")
	}
	own, ns, env := relayLedger(t)
	p := startLedger(t, env)
	c := newDrillClient(t, "natsdown", 6, p.base())
	c.loginAdmin(t, own.URL)
	stop := c.run()
	time.Sleep(faultTraffic())
	ns.Stop()
	stopped := time.Now()
	var row projections.Status
	waitUntil(t, "the status shows the relay failing and behind", func() bool {
		st, err := projectionStatus(p.base(), c.toks["admin"])
		var ok bool
		row, ok = relayRow(st)
		return err == nil && ok && row.State == "failed" && row.EventsBehind > 0 && row.LagMs > 0
	})
	waitUntil(t, "the admin listener is known", func() bool { return p.adminAddr.Load() != nil })
	m := scrapeMetrics(t, "http://"+*p.adminAddr.Load()+"/metrics")
	m.want(t, "ledger_relay_nats_connected", nil, 0)
	m.atLeast(t, "ledger_projection_events_behind", map[string]string{"projection": relay.Group}, 1)
	m.want(t, "ledger_projection_state", map[string]string{"projection": relay.Group, "state": "failed"}, 1)
	if code, _, err := c.request(http.MethodGet, "/api/ready", "", nil); err != nil || code != http.StatusOK {
		t.Fatalf("/api/ready %d %v while NATS is away", code, err)
	}
	if code, _, err := c.request(http.MethodGet, "/api/info", c.toks[c.users[0]], nil); err != nil || code != http.StatusOK {
		t.Fatalf("/api/info %d %v while NATS is away", code, err)
	}
	time.Sleep(3*time.Second - time.Since(stopped))
	t.Logf("NATS away for %v: %s at %s, %d behind, lag %dms: %s", time.Since(stopped).Round(time.Millisecond),
		row.Name, row.Checkpoint, row.EventsBehind, row.LagMs, row.LastError)
	ns.Start()
	time.Sleep(faultTraffic())
	stop()
	c.mu.Lock()
	for u, ops := range c.other {
		for op, n := range ops {
			if n > 0 {
				t.Errorf("%s: %d %s commands failed while NATS was away", u, n, op)
			}
		}
	}
	c.mu.Unlock()
	c.checkAcknowledged(t, own.URL)
	relaytest.WaitPublished(t, own.Pool)
	n := relaytest.CheckStream(t, ns.Connect(), own.Pool)
	st, _ := projectionStatus(p.base(), c.toks["admin"])
	if r, _ := relayRow(st); r.State != "live" {
		t.Fatalf("after NATS came back: %+v", r)
	}
	t.Logf("%d events, each once and in order", n)
}

// takeoverBound is how long after the relay's holder dies another replica may take to publish:
// the lease's retry (500ms) plus the relay's start and first page, with room for a loaded
// machine, and no more than the "within 2 s".
const takeoverBound = 2 * time.Second

// Two replicas: exactly one runs the relay; killed, the other takes it over within
// takeoverBound, timed by a command sent after the kill until its event is readable from
// JetStream, and nothing is missed.
func TestFaultRelayReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two real processes")
	}
	own, ns, env := relayLedger(t)
	procs := []*ledgerProc{startLedger(t, env), startLedger(t, env)}
	c := newDrillClient(t, "relayreplica", 6, procs[0].base(), procs[1].base())
	// The marker buys nothing until the kill, so its first purchase on the stream is the one
	// after it. The reader starts at the stream's first message: it cannot miss it.
	marker := uniq("relaymarker")
	c.login(t, marker)
	var markerStream string
	if err := own.Pool.QueryRow(context.Background(), `SELECT 'account-' || account_id FROM users WHERE username = $1`,
		marker).Scan(&markerStream); err != nil {
		t.Fatal(err)
	}
	nc := ns.Connect()
	js, _ := nc.JetStream()
	waitUntil(t, "the relay creates the stream", func() bool { _, err := js.StreamInfo(relay.DefaultStream); return err == nil })
	readCtx, stopReading := context.WithCancel(context.Background())
	defer stopReading()
	markerRead := make(chan time.Time, 1)
	readErr := make(chan error, 1)
	go func() {
		err := relay.Read(readCtx, nc, relay.ReadOptions{Types: []string{domain.TypeItemPurchased}}, func(m relay.Message) error {
			if m.Header.Get(relay.HeaderStreamID) == markerStream {
				markerRead <- time.Now()
				stopReading()
			}
			return nil
		})
		if readCtx.Err() == nil {
			readErr <- err
		}
	}()
	stop := c.run()
	time.Sleep(faultTraffic())
	var holder, other *ledgerProc
	waitUntil(t, "one replica runs the relay", func() bool {
		pid := relayHolder(t, own.Pool)
		for i, p := range procs {
			if p.pid() == pid {
				holder, other = p, procs[1-i]
			}
		}
		return holder != nil
	})
	for _, p := range procs {
		waitUntil(t, "the admin listeners are known", func() bool { return p.adminAddr.Load() != nil })
	}
	active := 0
	for _, p := range procs {
		v, _ := scrapeMetrics(t, "http://"+*p.adminAddr.Load()+"/metrics").sum("ledger_relay_active", nil)
		active += int(v)
	}
	if active != 1 {
		t.Fatalf("%d replicas say they run the relay", active)
	}
	c.setBases(other.base())
	killed := time.Now()
	holder.kill()
	if code, body, err := c.request(http.MethodGet, "/api/buy/pen", c.toks[marker], nil); err != nil || code != http.StatusOK {
		t.Fatalf("the marker's purchase after the kill: %d %s %v", code, body, err)
	}
	waitUntil(t, "the other replica takes the relay over", func() bool { return relayHolder(t, own.Pool) == other.pid() })
	took := time.Since(killed)
	var published time.Duration
	select {
	case at := <-markerRead:
		published = at.Sub(killed)
	case err := <-readErr:
		t.Fatalf("reading the stream: %v", err)
	case <-time.After(time.Minute): // a bound against a hang
		t.Fatal("the marker's purchase never reached JetStream")
	}
	t.Logf("relay lease taken over by %v after the kill, an event sent after the kill readable from JetStream %v after it",
		took.Round(time.Millisecond), published.Round(time.Millisecond))
	if published > takeoverBound {
		t.Errorf("an event sent after the kill was readable from JetStream %v after it, want within %v", published, takeoverBound)
	}
	time.Sleep(faultTraffic())
	stop()
	relaytest.WaitPublished(t, own.Pool)
	n := relaytest.CheckStream(t, nc, own.Pool)
	t.Logf("%d events, each once and in order", n)
}
