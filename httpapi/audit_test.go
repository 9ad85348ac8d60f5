package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/audit"
	"github.com/ledger/ledger/internal/auth"
)

func TestParseAsOf(t *testing.T) {
	for _, tc := range []struct {
		in, want, wantErr string
	}{
		{"0", "position 0", ""},
		{"12345", "position 12345", ""},
		{"2026-03-01T09:00:00Z", "2026-03-01T09:00:00Z", ""},
		{"2026-03-01T10:00:00.5+01:00", "2026-03-01T09:00:00.5Z", ""},
		{"2026-03-01T10:00:00 01:00", "2026-03-01T09:00:00Z", ""}, // an unencoded +
		{"", "", "empty"},
		{"-1", "", "RFC 3339"},
		{"99999999999999999999", "", "64 bits"},
		{"yesterday", "", "RFC 3339"},
		{"2026-03-01", "", "RFC 3339"},
		{"2026-13-01T00:00:00Z", "", "RFC 3339"},
		{"1.5", "", "RFC 3339"},
	} {
		at, err := parseAsOf(tc.in)
		switch {
		case tc.wantErr == "" && (err != nil || at.String() != tc.want):
			t.Errorf("parseAsOf(%q) = %s, %v; want %s", tc.in, at, err, tc.want)
		case tc.wantErr != "" && (err == nil || !errors.Is(err, errBadRequest) || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("parseAsOf(%q) = %v; want a bad request mentioning %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestHasParam(t *testing.T) {
	for raw, want := range map[string]bool{
		"":                 false,
		"asOf=1":           true,
		"x=1&asOf=":        true,
		"asOf":             true,
		"as%4Ff=1":         true,
		"asOf=%zz":         true,
		"x=asOf":           false,
		"asof=1":           false,
		"asOfX=1&y=asOf=1": false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/api/info?"+raw, nil)
		if got := hasParam(r, "asOf"); got != want {
			t.Errorf("hasParam(%q) = %v, want %v", raw, got, want)
		}
	}
}

// fakeLedger is the application layer for the handler tests: one account, alice, with a
// stream of n events, and a global log of the same events.
type fakeLedger struct {
	Ledger // the commands: never called here
	alice  uuid.UUID
	events []eventstore.RecordedEvent
	// failLogAfter makes AuditLog fail on reads after that many events (0: never).
	failLogAfter int
}

func newFakeLedger(n int) *fakeLedger {
	f := &fakeLedger{alice: uuid.New()}
	for i := range n {
		f.events = append(f.events, eventstore.RecordedEvent{
			Position: int64(i + 1), TransactionID: uint64(100 + i), StreamID: domain.StreamID(f.alice),
			Version: int64(i + 1), ID: uuid.New(), Type: domain.TypeCoinsGranted, SchemaVersion: 1,
			Payload: json.RawMessage(`{"amount": 1, "reason": "r"}`), RawMetadata: json.RawMessage(`{}`),
			RecordedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Hash: []byte{byte(i)},
		})
	}
	return f
}

func (f *fakeLedger) AccountID(_ context.Context, username string) (uuid.UUID, error) {
	if username == "alice" {
		return f.alice, nil
	}
	return uuid.Nil, domain.ErrUnknownAccount
}

func (f *fakeLedger) InfoAsOf(_ context.Context, id uuid.UUID, at app.AsOf) (app.Info, error) {
	return app.Info{Coins: 7, Inventory: []app.Holding{}, Received: []app.Transfer{}, Sent: []app.Transfer{}}, nil
}

func (f *fakeLedger) AccountEvents(_ context.Context, id uuid.UUID, after int64, limit int) ([]eventstore.RecordedEvent, error) {
	if id != f.alice {
		return nil, nil
	}
	rest := f.events[min(int(after), len(f.events)):]
	return rest[:min(limit, len(rest))], nil
}

func (f *fakeLedger) AuditLog(_ context.Context, after eventstore.Checkpoint, limit int) ([]eventstore.RecordedEvent, error) {
	rest := f.events[min(int(after.Position), len(f.events)):]
	if f.failLogAfter > 0 && after.Position >= int64(f.failLogAfter) {
		return nil, errors.New("connection reset")
	}
	return rest[:min(limit, len(rest))], nil
}

// fakeTokens reads "ROLE:NAME" and "user:NAME" tokens: the role is the token's hint, which the
// server must not trust.
type fakeTokens struct{}

func (fakeTokens) Verify(token string) (auth.Claims, error) {
	role, name, ok := strings.Cut(token, ":")
	if !ok {
		return auth.Claims{}, auth.ErrInvalidToken
	}
	return auth.Claims{Username: name, Roles: auth.RolesOf(auth.Role(role))}, nil
}

// fakeRoles are the roles the database holds, by username.
type fakeRoles map[string]auth.Roles

func (f fakeRoles) Roles(_ context.Context, username string) (auth.Roles, error) {
	return f[username], nil
}

func (f fakeRoles) RoleChanges(context.Context, string, int64, int) ([]app.RoleChange, error) {
	return nil, nil
}

// testRoles: root is an admin, eve an auditor, everyone else an employee.
var testRoles = fakeRoles{"root": auth.RolesOf(auth.RoleAdmin), "eve": auth.RolesOf(auth.RoleAuditor)}

func auditServer(t *testing.T, l Ledger) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(Deps{Ledger: l, Verifier: fakeTokens{}, Roles: testRoles, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, path, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read body: %v", path, err)
	}
	return resp, string(body)
}

func TestAccountEventsHandler(t *testing.T) {
	srv := auditServer(t, newFakeLedger(5))
	for _, tc := range []struct {
		name, path, token string
		code              int
		want              string // substring of the body
	}{
		{"owner", "/api/audit/accounts/alice/events", "user:alice", 200, `"next":null`},
		{"admin", "/api/audit/accounts/alice/events?limit=2", "admin:root", 200, `"next":2`},
		{"admin, second page", "/api/audit/accounts/alice/events?limit=2&after=2", "admin:root", 200, `"next":4`},
		{"admin, last page", "/api/audit/accounts/alice/events?limit=2&after=4", "admin:root", 200, `"next":null`},
		{"another employee", "/api/audit/accounts/alice/events", "user:bob", 403, "admin role"},
		{"another employee, unknown name", "/api/audit/accounts/nobody/events", "user:bob", 403, "admin role"},
		{"another employee, bad limit", "/api/audit/accounts/alice/events?limit=x", "user:bob", 403, "admin role"},
		{"admin, unknown name", "/api/audit/accounts/nobody/events", "admin:root", 404, `no employee named \"nobody\"`},
		{"escaped name", "/api/audit/accounts/a%2Fb/events", "admin:root", 404, `a/b`},
		{"NUL in the name", "/api/audit/accounts/a%00/events", "admin:root", 400, "username: contains a NUL character"},
		{"a stray byte for a name", "/api/audit/accounts/%ff/events", "admin:root", 400, "username: not valid UTF-8"},
		{"a broken sequence in the name", "/api/audit/accounts/%C3%28/events", "admin:root", 400, "username: not valid UTF-8"},
		{"NUL in an escaped name", "/api/audit/accounts/a%2Fb%00/events", "admin:root", 400, "username: contains a NUL character"},
		{"limit 0", "/api/audit/accounts/alice/events?limit=0", "user:alice", 400, "limit"},
		{"limit too big", "/api/audit/accounts/alice/events?limit=1001", "user:alice", 400, "1 to 1000"},
		{"limit a word", "/api/audit/accounts/alice/events?limit=ten", "user:alice", 400, "limit"},
		{"after negative", "/api/audit/accounts/alice/events?after=-1", "user:alice", 400, "after"},
		{"after twice", "/api/audit/accounts/alice/events?after=1&after=2", "user:alice", 400, "2 times"},
		{"malformed query", "/api/audit/accounts/alice/events?after=%zz", "user:alice", 400, "malformed"},
		{"no token", "/api/audit/accounts/alice/events", "", 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, srv, tc.path, tc.token)
			if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("%d %s; want %d with %q", resp.StatusCode, body, tc.code, tc.want)
			}
			if tc.code == 200 {
				var page accountEventsResponse
				if err := json.Unmarshal([]byte(body), &page); err != nil || page.Username != "alice" || len(page.Events) == 0 {
					t.Fatalf("page %+v, %v", page, err)
				}
			}
		})
	}
}

func TestAuditLogHandler(t *testing.T) {
	const n = 2*logPage + 10
	f := newFakeLedger(n)
	srv := auditServer(t, f)
	lines := func(t *testing.T, body string) []audit.Record {
		t.Helper()
		var recs []audit.Record
		sc := bufio.NewScanner(strings.NewReader(body))
		for sc.Scan() {
			var r audit.Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("line %d: %v", len(recs)+1, err)
			}
			recs = append(recs, r)
		}
		return recs
	}

	resp, body := get(t, srv, "/api/audit/log", "admin:root")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	recs := lines(t, body)
	if len(recs) != n || recs[n-1].Checkpoint != f.events[n-1].Checkpoint().String() {
		t.Fatalf("%d lines, want %d", len(recs), n)
	}
	resp, body = get(t, srv, "/api/audit/log?after="+recs[logPage+4].Checkpoint+"&limit=3", "admin:root")
	if got := lines(t, body); resp.StatusCode != 200 || len(got) != 3 || got[0].Position != int64(logPage+6) {
		t.Fatalf("resumed: %d, %d lines", resp.StatusCode, len(got))
	}
	if resp, body = get(t, srv, "/api/audit/log?after="+recs[n-1].Checkpoint, "admin:root"); resp.StatusCode != 200 || body != "" {
		t.Fatalf("after the end: %d %q", resp.StatusCode, body)
	}

	for path, want := range map[string]string{
		"/api/audit/log?after=5":         "checkpoint",
		"/api/audit/log?after=":          "checkpoint",
		"/api/audit/log?limit=0":         "limit",
		"/api/audit/log?limit=1000001":   "limit",
		"/api/audit/log?after=1:2&limit": "limit",
	} {
		if resp, body := get(t, srv, path, "admin:root"); resp.StatusCode != 400 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, srv, "/api/audit/log", "user:alice"); resp.StatusCode != 403 {
		t.Errorf("non-admin: %d", resp.StatusCode)
	}

	// A failure after the first page cuts the stream: the client must not take it for the end.
	f.failLogAfter = logPage
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/audit/log", nil)
	req.Header.Set("Authorization", "Bearer admin:root")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("a stream cut short by a failure read as complete")
	}
}

func TestInfoAsOfHandler(t *testing.T) {
	srv := auditServer(t, newFakeLedger(1))
	for path, code := range map[string]int{
		"/api/info?asOf=3":                    200,
		"/api/info?asOf=2026-01-01T00:00:00Z": 200,
		"/api/info?asOf=":                     400,
		"/api/info?asOf=soon":                 400,
		"/api/info?asOf=%zz":                  400,
		"/api/info?asOf=1&asOf=2":             400,
	} {
		resp, body := get(t, srv, path, "user:alice")
		if resp.StatusCode != code {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
		if code == 200 && !strings.Contains(body, `"coins":7`) {
			t.Errorf("%s: %s", path, body)
		}
	}
}

// TestAuditNeedsAnAuditor: a Ledger without the audit queries answers 404, never 500.
func TestAuditNeedsAnAuditor(t *testing.T) {
	type plain struct{ Ledger }
	srv := auditServer(t, plain{newFakeLedger(1)})
	for path, token := range map[string]string{"/api/audit/log": "user:root", "/api/audit/accounts/alice/events": "user:root", "/api/info?asOf=1": "user:alice"} {
		if resp, body := get(t, srv, path, token); resp.StatusCode != 404 {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
}
