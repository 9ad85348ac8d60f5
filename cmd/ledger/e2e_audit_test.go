package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/google/uuid"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/pgtest"
)

func init() {
	// The document describes the NDJSON log as the array of its lines, so that every line is
	// validated against AuditEvent.
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		lines, err := ndjsonLines(r)
		out := make([]any, len(lines))
		for i, l := range lines {
			out[i] = l
		}
		return out, err
	})
}

// ndjsonLines decodes newline-delimited JSON; every line, the last one too, must end in "\n".
func ndjsonLines(r io.Reader) ([]map[string]any, error) {
	var lines []map[string]any
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return lines, nil
		}
		if err != nil {
			return lines, fmt.Errorf("line %d: %w (%q)", len(lines)+1, err, line)
		}
		var v map[string]any
		if err := json.Unmarshal(line, &v); err != nil {
			return lines, fmt.Errorf("line %d: %w", len(lines)+1, err)
		}
		lines = append(lines, v)
	}
}

// auditEvent is an AuditEvent of the API: the record the audit package writes.
type auditEvent = audit.Record

type accountEventsPage struct {
	Username  string       `json:"username"`
	AccountID uuid.UUID    `json:"accountId"`
	StreamID  string       `json:"streamId"`
	Events    []auditEvent `json:"events"`
	Next      *int64       `json:"next"`
}

func (c *apiClient) accountEvents(t testing.TB, token, username, query string) (response, accountEventsPage) {
	t.Helper()
	r := c.do(t, http.MethodGet, "/api/audit/accounts/"+url.PathEscape(username)+"/events"+query, token, nil)
	var page accountEventsPage
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatalf("decode %s: %v", r, err)
		}
	}
	return r, page
}

// allAccountEvents pages through an account's events, limit events at a time.
func (c *apiClient) allAccountEvents(t testing.TB, token, username string, limit int) []auditEvent {
	t.Helper()
	var all []auditEvent
	after := int64(0)
	for pages := 0; ; pages++ {
		r, page := c.accountEvents(t, token, username, fmt.Sprintf("?after=%d&limit=%d", after, limit))
		if r.Status != http.StatusOK {
			t.Fatalf("events of %s: %s", username, r)
		}
		if len(page.Events) > limit {
			t.Fatalf("a page of %d events, limit %d", len(page.Events), limit)
		}
		all = append(all, page.Events...)
		if page.Next == nil {
			return all
		}
		if len(page.Events) == 0 || *page.Next != page.Events[len(page.Events)-1].Version || pages > 1000 {
			t.Fatalf("next %d after a page ending at %v", *page.Next, page.Events)
		}
		after = *page.Next
	}
}

// auditLog reads /api/audit/log and decodes its lines.
func (c *apiClient) auditLog(t testing.TB, token, query string) (response, []auditEvent) {
	t.Helper()
	r := c.do(t, http.MethodGet, "/api/audit/log"+query, token, nil)
	if r.Status != http.StatusOK {
		return r, nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	var evs []auditEvent
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("log line %d: %v", len(evs)+1, err)
		}
		evs = append(evs, e)
	}
	return r, evs
}

func (c *apiClient) infoAsOf(t testing.TB, token, asOf string) (response, info) {
	t.Helper()
	r := c.do(t, http.MethodGet, "/api/info?asOf="+asOf, token, nil)
	var in info
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &in); err != nil {
			t.Fatalf("decode %s: %v", r, err)
		}
	}
	return r, in
}

var hexHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

// TestE2EAudit: the audit endpoints, time travel and the audit commands, through the real
// service and binary entry point.
func TestE2EAudit(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	alice, bob, carol := uniq("alice"), uniq("bob"), uniq("carol")
	at, bt, ct := api.login(t, alice), api.login(t, bob), api.login(t, carol)
	admin := api.login(t, "admin")

	// Alice's account after each command, and a time between each command and the next.
	type moment struct {
		at   time.Time
		info info
	}
	var moments []moment
	mark := func() {
		t.Helper()
		moments = append(moments, moment{at: time.Now(), info: api.info(t, at)})
	}
	mark()
	wantOK(t, api.buy(t, at, "cup"))
	mark()
	wantOK(t, api.sendCoin(t, at, bob, 15))
	mark()
	wantOK(t, api.sendCoin(t, bt, alice, 5))
	mark()
	wantOK(t, api.buy(t, at, "pen"))
	mark()
	const aliceEvents = 6 // opened, welcome grant, cup, sent, received, pen

	t.Run("account events for the owner and admins only", func(t *testing.T) {
		own := api.allAccountEvents(t, at, alice, 100)
		if len(own) != aliceEvents {
			t.Fatalf("%d events, want %d", len(own), aliceEvents)
		}
		wantTypes := []string{"AccountOpened", "CoinsGranted", "ItemPurchased", "CoinsSent", "CoinsReceived", "ItemPurchased"}
		for i, e := range own {
			if e.Version != int64(i+1) || e.Type != wantTypes[i] || !hexHash.MatchString(e.Hash) || e.StreamID != own[0].StreamID {
				t.Fatalf("event %d: %+v", i+1, e)
			}
			if i > 0 && (e.Position <= own[i-1].Position || e.RecordedAt.Before(own[i-1].RecordedAt)) {
				t.Fatalf("event %d goes back in position or time: %+v after %+v", i+1, e, own[i-1])
			}
			var md map[string]any
			if json.Unmarshal(e.Metadata, &md) != nil || md["actor"] == nil {
				t.Fatalf("event %d metadata %s", i+1, e.Metadata)
			}
		}
		if !bytes.Contains(own[3].Payload, []byte(bob)) {
			t.Errorf("the transfer does not name bob: %s", own[3].Payload)
		}
		if byAdmin := api.allAccountEvents(t, admin, alice, 100); !reflect.DeepEqual(byAdmin, own) {
			t.Errorf("the admin sees other events than the owner")
		}
		r, _ := api.accountEvents(t, ct, alice, "")
		wantStatus(t, r, http.StatusForbidden, "admin")
		r, _ = api.accountEvents(t, ct, uniq("nobody"), "")
		wantStatus(t, r, http.StatusForbidden, "admin") // no hint whether the employee exists
		r, _ = api.accountEvents(t, admin, uniq("nobody"), "")
		wantStatus(t, r, http.StatusNotFound, "no employee")
		r, _ = api.accountEvents(t, "", alice, "")
		wantStatus(t, r, http.StatusUnauthorized)
	})

	t.Run("account events page by page", func(t *testing.T) {
		all := api.allAccountEvents(t, at, alice, 100)
		for _, limit := range []int{1, 2, 4, 5, 6} {
			if got := api.allAccountEvents(t, at, alice, limit); !reflect.DeepEqual(got, all) {
				t.Errorf("pages of %d: %d events, not the same as one page", limit, len(got))
			}
		}
		_, page := api.accountEvents(t, at, alice, "?limit=4")
		if page.Next == nil || *page.Next != 4 || len(page.Events) != 4 {
			t.Fatalf("first page of 4: %d events, next %v", len(page.Events), page.Next)
		}
		_, page = api.accountEvents(t, at, alice, "?after=6")
		if len(page.Events) != 0 || page.Next != nil {
			t.Fatalf("after the last event: %+v", page)
		}
	})

	t.Run("bad input is a 4xx that says what is wrong", func(t *testing.T) {
		for _, tc := range []struct{ query, want string }{
			{"?limit=0", "limit"}, {"?limit=1001", "limit"}, {"?limit=ten", "limit"}, {"?limit=", "limit"},
			{"?after=-1", "after"}, {"?after=x", "after"}, {"?after=1.5", "after"}, {"?after=1&after=2", "after"},
			{"?after=%zz", "malformed"},
		} {
			r, _ := api.accountEvents(t, at, alice, tc.query)
			wantStatus(t, r, http.StatusBadRequest, tc.want)
		}
		for _, tc := range []struct{ query, want string }{
			{"?after=12", "checkpoint"}, {"?after=a:b", "checkpoint"}, {"?after=1:-1", "checkpoint"},
			{"?limit=0", "limit"}, {"?limit=1000001", "limit"}, {"?limit=x", "limit"},
		} {
			r, _ := api.auditLog(t, admin, tc.query)
			wantStatus(t, r, http.StatusBadRequest, tc.want)
		}
		r, _ := api.auditLog(t, at, "")
		wantStatus(t, r, http.StatusForbidden, "admin")
		r, _ = api.auditLog(t, "", "")
		wantStatus(t, r, http.StatusUnauthorized)
		for _, asOf := range []string{"", "soon", "-1", "2026-13-01T00:00:00Z", "2026-03-01", "1e3", "99999999999999999999", "%zz"} {
			r, _ := api.infoAsOf(t, at, asOf)
			wantStatus(t, r, http.StatusBadRequest)
		}
	})

	t.Run("the log streams in reader order and resumes at a checkpoint", func(t *testing.T) {
		own := api.allAccountEvents(t, at, alice, 100)
		// The log is readable below the oldest transaction on the server, which other test
		// packages share: wait until it reaches alice's last event.
		var lines []auditEvent
		deadline := time.Now().Add(time.Minute)
		for {
			var r response
			r, lines = api.auditLog(t, admin, "?limit=1000000")
			if r.Status != http.StatusOK {
				t.Fatalf("log: %s", r)
			}
			if containsEvent(lines, own[len(own)-1].EventID) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice's last event never became readable in the log")
			}
			time.Sleep(20 * time.Millisecond)
		}
		var ofAlice []auditEvent
		for i, l := range lines {
			if i > 0 {
				prev, _ := eventstore.ParseCheckpoint(lines[i-1].Checkpoint)
				cur, err := eventstore.ParseCheckpoint(l.Checkpoint)
				if err != nil || !prev.Before(cur) {
					t.Fatalf("line %d: checkpoint %s after %s", i+1, l.Checkpoint, lines[i-1].Checkpoint)
				}
			}
			if l.StreamID == own[0].StreamID {
				ofAlice = append(ofAlice, l)
			}
		}
		if !reflect.DeepEqual(ofAlice, own) {
			t.Fatalf("alice's events in the log differ from her account's events")
		}
		k := len(lines) / 2
		r, rest := api.auditLog(t, admin, "?after="+lines[k].Checkpoint+"&limit=3")
		if r.Status != http.StatusOK || len(rest) != min(3, len(lines)-k-1) || !reflect.DeepEqual(rest, lines[k+1:k+1+len(rest)]) {
			t.Fatalf("resumed after line %d: %d lines, not the next ones", k+1, len(rest))
		}
	})

	t.Run("info as of a time or a log position", func(t *testing.T) {
		own := api.allAccountEvents(t, at, alice, 100)
		for i, m := range moments {
			for _, asOf := range []string{
				m.at.UTC().Format(time.RFC3339Nano),
				url.QueryEscape(m.at.In(time.FixedZone("", 5*3600+1800)).Format(time.RFC3339Nano)), // +05:30, encoded
			} {
				r, in := api.infoAsOf(t, at, asOf)
				if r.Status != http.StatusOK || in.String() != m.info.String() {
					t.Fatalf("asOf %s (after command %d): %s\ngot  %s\nwant %s", asOf, i, r, in, m.info)
				}
			}
		}
		// Each of alice's events after the welcome grant is one command's.
		for i, e := range own[1:] {
			r, in := api.infoAsOf(t, at, fmt.Sprint(e.Position))
			if r.Status != http.StatusOK || in.String() != moments[i].info.String() {
				t.Fatalf("asOf position %d (version %d): got %s, want %s", e.Position, e.Version, in, moments[i].info)
			}
		}
		// Before the account existed there is no account, not an empty one.
		for _, asOf := range []string{"0", fmt.Sprint(own[0].Position - 1), own[0].RecordedAt.Add(-time.Second).Format(time.RFC3339Nano)} {
			r, _ := api.infoAsOf(t, at, asOf)
			if r.Status != http.StatusNotFound || string(r.Body) != `{"errors":"no such account at that time"}`+"\n" {
				t.Fatalf("asOf %s, before alice existed: %s", asOf, r)
			}
		}
		if _, in := api.infoAsOf(t, at, "9223372036854775807"); in.String() != api.info(t, at).String() {
			t.Fatalf("asOf the largest position is not now: %s", in)
		}
	})

	t.Run("ledger audit export", func(t *testing.T) {
		dir := t.TempDir()
		all := filepath.Join(dir, "all.ndjson")
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{"audit", "export", "--database-url", db.URL, "--out", all, "--page-size", "7"}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "exported") {
			t.Errorf("no summary: %q", stderr.String())
		}
		lines := readExport(t, all)
		if len(lines) < aliceEvents {
			t.Fatalf("%d lines", len(lines))
		}
		k := len(lines) / 3
		part := filepath.Join(dir, "part.ndjson")
		stderr.Reset()
		code := run(context.Background(), []string{"audit", "export", "--database-url", db.URL, "--out", part,
			"--after", lines[k].Checkpoint, "--until", lines[2*k].Checkpoint}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
		if got := readExport(t, part); !reflect.DeepEqual(got, lines[k+1:2*k+1]) {
			t.Fatalf("range export: %d lines, want lines %d to %d", len(got), k+2, 2*k+1)
		}
		stdout.Reset()
		if code := run(context.Background(), []string{"audit", "export", "--database-url", db.URL, "--until", lines[0].Checkpoint}, &stdout, &stderr); code != 0 {
			t.Fatalf("export to stdout: exit %d: %s", code, stderr.String())
		}
		if n := strings.Count(stdout.String(), "\n"); n != 1 {
			t.Fatalf("export to stdout up to the first event: %d lines", n)
		}
		for _, args := range [][]string{{"--after", "12"}, {"--until", "x:y"}, {"--page-size", "0"}, {"extra"}} {
			stderr.Reset()
			if code := run(context.Background(), append([]string{"audit", "export", "--database-url", db.URL}, args...), &stdout, &stderr); code != 2 {
				t.Errorf("audit export %v: exit %d, want 2 (%s)", args, code, stderr.String())
			}
		}
		if code := run(context.Background(), []string{"audit"}, &stdout, &stderr); code != 2 {
			t.Errorf("audit without a command: exit %d", code)
		}
	})

	t.Run("ledger audit verify finds the live ledger consistent", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"audit", "verify", "--database-url", db.URL}, &stdout, &stderr)
		if code != 0 || !strings.Contains(stdout.String(), "no mismatch") {
			t.Fatalf("exit %d\n%s%s", code, stdout.String(), stderr.String())
		}
		t.Logf("%s", stdout.String())
	})
}

func containsEvent(lines []auditEvent, id uuid.UUID) bool {
	for _, l := range lines {
		if l.EventID == id {
			return true
		}
	}
	return false
}

func readExport(t *testing.T, name string) []auditEvent {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []auditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e auditEvent
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%s line %d: %v", name, len(evs)+1, err)
		}
		evs = append(evs, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestE2EAuditVerifyNamesTampering: in a database of its own, an event edited in place (the
// append-only trigger disabled, as a superuser could) and a read-model row edited by hand make
// `ledger audit verify` exit non-zero, naming exactly that event and that account.
func TestE2EAuditVerifyNamesTampering(t *testing.T) {
	ctx := context.Background()
	own := pgtest.New(t, "cmd_audit_tamper")
	ts := startTestServiceOnDB(t, own.URL)
	api := ts.api
	alice, bob := uniq("alice"), uniq("bob")
	at, bt := api.login(t, alice), api.login(t, bob)
	wantOK(t, api.buy(t, at, "book"))
	wantOK(t, api.sendCoin(t, bt, alice, 40))
	waitAllProjected(t, own)

	verify := func() (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(ctx, []string{"audit", "verify", "--database-url", own.URL, "--page-size", "2"}, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := verify(); code != 0 {
		t.Fatalf("before tampering: exit %d\n%s", code, out)
	}

	var aliceID, bobID uuid.UUID
	if err := own.Pool.QueryRow(ctx, `SELECT account_id FROM users WHERE username = $1`, alice).Scan(&aliceID); err != nil {
		t.Fatal(err)
	}
	if err := own.Pool.QueryRow(ctx, `SELECT account_id FROM users WHERE username = $1`, bob).Scan(&bobID); err != nil {
		t.Fatal(err)
	}
	// Alice's welcome grant (version 2) gets another reason: her coins stay the same, so the
	// event is the only thing to name.
	for _, sql := range []string{
		`ALTER TABLE events DISABLE TRIGGER USER`,
		`UPDATE events SET payload_bytes = convert_to(replace(convert_from(payload_bytes, 'UTF8'), '"welcome"', '"a quiet bonus"'), 'UTF8') WHERE stream_id = 'account-` + aliceID.String() + `' AND stream_version = 2`,
		`ALTER TABLE events ENABLE TRIGGER USER`,
		`UPDATE balance_v1 SET coins = coins + 100 WHERE account_id = '` + bobID.String() + `'`,
	} {
		if _, err := own.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	code, out := verify()
	if code != 1 {
		t.Fatalf("after tampering: exit %d, want 1\n%s", code, out)
	}
	wantEvent := fmt.Sprintf("event account-%s version 2 ", aliceID)
	if strings.Count(out, "event account-") != 1 || !strings.Contains(out, wantEvent+"(id ") || !strings.Contains(out, "hash mismatch") {
		t.Errorf("want exactly %q named:\n%s", wantEvent, out)
	}
	if strings.Count(out, "account \"") != 1 || !strings.Contains(out, fmt.Sprintf("account %q (%s), balance_v1: coins", bob, bobID)) {
		t.Errorf("want exactly bob's balance_v1 named:\n%s", out)
	}
	if !strings.Contains(out, "2 mismatches") {
		t.Errorf("want 2 mismatches counted:\n%s", out)
	}
}

// waitAllProjected waits until every projector has applied every account stream's head.
func waitAllProjected(t *testing.T, d *pgtest.Database) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var behind int
		err := d.Pool.QueryRow(context.Background(), `
			SELECT count(*) FROM streams s
			CROSS JOIN (SELECT name || '_v' || active_version FROM projection_versions) AS g(name)
			LEFT JOIN projection_heads h ON h.consumer_group = g.name AND h.account_id = substr(s.stream_id, 9)::uuid
			WHERE s.stream_id LIKE 'account-%' AND COALESCE(h.version, 0) <> s.version`).Scan(&behind)
		if err != nil {
			t.Fatal(err)
		}
		if behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("projections still behind on %d (account, projection) pairs", behind)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startTestServiceOnDB starts the service as startTestService does, on another database.
func startTestServiceOnDB(t *testing.T, databaseURL string) *testService {
	t.Helper()
	return startTestService(t, func(c *serveConfig) { c.DatabaseURL, c.DBMaxConns = databaseURL, 8 })
}
