package main

// Roles end to end: accounts and roles made with `ledger users`, tokens minted with `ledger
// token`, and every privileged path of the real service refusing whoever the database says
// lacks the role, whatever their token says.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/pgtest"
)

// testOperator is who the suite's role changes are recorded as done by.
const testOperator = "test suite"

// usersCLI runs `ledger users ARGS` in process with stdin, as an operator would.
func usersCLI(t testing.TB, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	err = runUsers(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), err
}

// ensureRole makes name an employee with the suite's password and role, through `ledger
// users`: created when absent, granted the role when it lacks it.
func ensureRole(t testing.TB, databaseURL, name string, role auth.Role) {
	t.Helper()
	_, stderr, err := usersCLI(t, testPassword+"\n", "create", name, "--role", string(role), "--password-stdin",
		"--by", testOperator, "--database-url", databaseURL)
	if err != nil && strings.Contains(err.Error(), "exists already") {
		_, stderr, err = usersCLI(t, "", "grant", name, string(role), "--by", testOperator, "--database-url", databaseURL)
		if errors.Is(err, app.ErrRoleHeld) {
			err = nil
		}
	}
	if err != nil {
		t.Fatalf("make %s an %s: %v\n%s", name, role, err, stderr)
	}
}

// ensureAdmin makes "admin" the admin of the database, for tests that log in as "admin".
func ensureAdmin(t testing.TB, databaseURL string) {
	t.Helper()
	ensureRole(t, databaseURL, "admin", auth.RoleAdmin)
}

// mintToken runs `ledger token --user NAME` against the service's database and key.
func mintToken(t testing.TB, ts *testService, name string) string {
	t.Helper()
	var out, errb bytes.Buffer
	err := runToken(context.Background(), []string{"--user", name, "--database-url", ts.cfg.DatabaseURL,
		"--signing-key-file", ts.signingKeyFile}, &out, &errb)
	if err != nil {
		t.Fatalf("ledger token --user %s: %v\n%s", name, err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

// tokenRoles returns the roles a token of the service names.
func tokenRoles(t testing.TB, ts *testService, token string) auth.Roles {
	t.Helper()
	_, pub, err := auth.LoadOrCreateKeys(ts.signingKeyFile, ts.verificationKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := auth.NewVerifier(pub, tokenIssuer, tokenAudience, 0).Verify(token)
	if err != nil {
		t.Fatalf("verify token: %v", err)
	}
	return c.Roles
}

type roleChange struct {
	ID       int64  `json:"id"`
	Action   string `json:"action"`
	Username string `json:"username"`
	Role     string `json:"role"`
	Actor    string `json:"actor"`
	OSUser   string `json:"osUser"`
	DBUser   string `json:"dbUser"`
}

// roleChanges reads every entry of GET /api/audit/roles for username.
func (c *apiClient) roleChanges(t testing.TB, token, username string) []roleChange {
	t.Helper()
	var all []roleChange
	for after := int64(0); ; {
		r := c.do(t, http.MethodGet, "/api/audit/roles?limit=2&username="+url.QueryEscape(username)+"&after="+strconv.FormatInt(after, 10), token, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("role changes: %s", r)
		}
		var page struct {
			Changes []roleChange `json:"changes"`
			Next    *int64       `json:"next"`
		}
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatalf("role changes: %v: %s", err, r)
		}
		all = append(all, page.Changes...)
		if page.Next == nil {
			return all
		}
		after = *page.Next
	}
}

// privileged are the requests that need a role, and a body where they take one.
func privileged(grantTo string) []struct {
	method, path string
	body         any
	roles        []auth.Role // any of these is enough
} {
	return []struct {
		method, path string
		body         any
		roles        []auth.Role
	}{
		{http.MethodPost, "/api/admin/grant", map[string]any{"toUser": grantTo, "amount": 1, "reason": "role test"}, []auth.Role{auth.RoleAdmin}},
		{http.MethodGet, "/api/admin/projections", nil, []auth.Role{auth.RoleAdmin}},
		{http.MethodGet, "/api/audit/log?limit=1", nil, []auth.Role{auth.RoleAuditor, auth.RoleAdmin}},
		{http.MethodGet, "/api/audit/roles?limit=1", nil, []auth.Role{auth.RoleAuditor, auth.RoleAdmin}},
		{http.MethodGet, "/api/audit/accounts/" + url.PathEscape(grantTo) + "/events?limit=1", nil, []auth.Role{auth.RoleAuditor, auth.RoleAdmin}},
	}
}

// TestE2ESignUpGivesNoRole: on a new deployment, where no admin exists yet, signing up as
// "admin" gives an ordinary account: every privileged request is refused, and a token minted
// for it names no role.
func TestE2ESignUpGivesNoRole(t *testing.T) {
	own := pgtest.New(t, "signup")
	ts := startTestService(t, func(c *serveConfig) { c.DatabaseURL = own.URL; c.RoleCacheTTL = 0 })
	api := ts.api
	victim := api.login(t, "victim")
	for _, name := range []string{"admin", "auditor", "root"} {
		tok := api.login(t, name)
		minted := mintToken(t, ts, name)
		if rs := tokenRoles(t, ts, tok); rs != 0 {
			t.Errorf("sign-up token of %q names roles %s", name, rs)
		}
		if rs := tokenRoles(t, ts, minted); rs != 0 {
			t.Errorf("ledger token for the signed-up %q names roles %s", name, rs)
		}
		for _, tk := range []string{tok, minted} {
			for _, p := range privileged("victim") {
				wantStatus(t, api.do(t, p.method, p.path, tk, p.body), http.StatusForbidden, "role")
			}
		}
	}
	if in := api.info(t, victim); in.Coins != 1000 {
		t.Errorf("victim has %d coins after the refused grants, want 1000", in.Coins)
	}
}

// TestE2ERolesGiveWhatTheySay: an admin and an auditor made with `ledger users create` (an
// account like a signed-up one, plus the role) can do what their role allows and nothing more;
// an employee can read only their own events.
func TestE2ERolesGiveWhatTheySay(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	boss, auditor, emp := uniq("boss"), uniq("auditor"), uniq("emp")
	for name, role := range map[string]auth.Role{boss: auth.RoleAdmin, auditor: auth.RoleAuditor} {
		out, stderr, err := usersCLI(t, testPassword+"\r\n", "create", name, "--role", string(role), "--password-stdin",
			"--by", testOperator, "--database-url", db.URL)
		if err != nil || !strings.Contains(out, "created "+name) {
			t.Fatalf("users create %s: %v\n%s%s", name, err, out, stderr)
		}
	}
	bossTok, auditorTok, empTok := api.login(t, boss), api.login(t, auditor), api.login(t, emp)
	// Logging in names no role in the token: the server asks the database.
	if rs := tokenRoles(t, ts, bossTok); rs != 0 {
		t.Errorf("login token names roles %s", rs)
	}
	// The operator-made account is opened as signing up opens one: same events, same coins.
	byType := func(name string) []string {
		r := api.do(t, http.MethodGet, "/api/audit/accounts/"+name+"/events", auditorTok, nil)
		if r.Status != http.StatusOK {
			t.Fatalf("events of %s: %s", name, r)
		}
		var page struct {
			Events []struct {
				Type string `json:"type"`
			} `json:"events"`
		}
		if err := json.Unmarshal(r.Body, &page); err != nil {
			t.Fatal(err)
		}
		var types []string
		for _, e := range page.Events {
			types = append(types, e.Type)
		}
		return types
	}
	if a, b := strings.Join(byType(boss), ","), strings.Join(byType(emp), ","); a != b || a == "" {
		t.Errorf("events of the created account %q differ from a signed-up one's %q", a, b)
	}
	if in := api.info(t, bossTok); in.Coins != 1000 {
		t.Errorf("created admin has %d coins, want the welcome 1000", in.Coins)
	}

	for _, who := range []struct {
		name, token string
		roles       auth.Roles
	}{
		{boss, bossTok, auth.RolesOf(auth.RoleAdmin)},
		{auditor, auditorTok, auth.RolesOf(auth.RoleAuditor)},
		{emp, empTok, 0},
	} {
		for _, p := range privileged(emp) {
			if strings.Contains(p.path, "/accounts/") && who.name == emp {
				continue // one's own events: below
			}
			r := api.do(t, p.method, p.path, who.token, p.body)
			if who.roles.HasAny(p.roles...) {
				if r.Status != http.StatusOK {
					t.Errorf("%s (%s): want 200, got %s", who.name, who.roles, r)
				}
			} else {
				wantStatus(t, r, http.StatusForbidden, "role")
			}
		}
	}
	wantStatus(t, api.do(t, http.MethodGet, "/api/audit/accounts/"+emp+"/events", empTok, nil), http.StatusOK)
	wantStatus(t, api.do(t, http.MethodGet, "/api/audit/accounts/"+boss+"/events", empTok, nil), http.StatusForbidden, "auditor or admin role")
	wantStatus(t, api.do(t, http.MethodGet, "/api/audit/accounts/"+uniq("nobody")+"/events", auditorTok, nil), http.StatusNotFound, "no employee")
	if in := api.info(t, empTok); in.Coins != 1001 {
		t.Errorf("employee has %d coins, want 1000 + the admin's 1", in.Coins)
	}

	// The record names both creations and who made them.
	for name, role := range map[string]auth.Role{boss: auth.RoleAdmin, auditor: auth.RoleAuditor} {
		got := api.roleChanges(t, auditorTok, name)
		if len(got) != 1 || got[0].Action != app.ActionCreate || got[0].Role != string(role) || got[0].Actor != testOperator || got[0].DBUser == "" {
			t.Errorf("role changes of %s: %+v, want one creation with %s by %q", name, got, role, testOperator)
		}
	}
}

// TestE2ERevokedRoleRefusedWithinTheCache: a revoked admin is refused within the role cache
// time, with the token of their login and with a token `ledger token` minted while they were
// admin (which names the role); granted again, both work again. Without a cache, at once.
func TestE2ERevokedRoleRefusedWithinTheCache(t *testing.T) {
	for _, ttl := range []time.Duration{0, time.Second} {
		t.Run("cache "+ttl.String(), func(t *testing.T) {
			ts := startTestService(t, func(c *serveConfig) { c.RoleCacheTTL = ttl })
			api := ts.api
			boss := uniq("boss")
			ensureRole(t, db.URL, boss, auth.RoleAdmin)
			login, minted := api.login(t, boss), mintToken(t, ts, boss)
			if rs := tokenRoles(t, ts, minted); rs != auth.RolesOf(auth.RoleAdmin) {
				t.Fatalf("ledger token names roles %s, want admin", rs)
			}
			for _, tok := range []string{login, minted} {
				wantStatus(t, api.do(t, http.MethodGet, "/api/admin/projections", tok, nil), http.StatusOK)
			}

			if _, stderr, err := usersCLI(t, "", "revoke", boss, "admin", "--by", testOperator, "--database-url", db.URL); err != nil {
				t.Fatalf("revoke: %v\n%s", err, stderr)
			}
			revoked := time.Now()
			// The bound: an answer cached around the revocation is reused for ttl at most. The
			// slack covers the read that the answer came from, in flight as the revocation
			// committed; it is not room for the cache.
			deadline := revoked.Add(ttl + 250*time.Millisecond)
			for _, tok := range []string{login, minted} {
				for {
					sent := time.Now()
					r := api.do(t, http.MethodGet, "/api/admin/projections", tok, nil)
					if r.Status == http.StatusForbidden {
						break
					}
					if r.Status != http.StatusOK || ttl == 0 || sent.After(deadline) {
						t.Fatalf("a request sent %s after the revocation: %s", sent.Sub(revoked), r)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			for _, tok := range []string{login, minted} {
				wantStatus(t, api.grant(t, tok, map[string]any{"toUser": boss, "amount": 5, "reason": "self"}), http.StatusForbidden, "admin role")
				wantStatus(t, api.do(t, http.MethodGet, "/api/audit/log?limit=1", tok, nil), http.StatusForbidden, "role")
			}

			ensureRole(t, db.URL, boss, auth.RoleAdmin)
			time.Sleep(ttl) // the cached "none" runs out
			for _, tok := range []string{login, minted} {
				wantStatus(t, api.do(t, http.MethodGet, "/api/admin/projections", tok, nil), http.StatusOK)
			}
		})
	}
}

// TestUsersCommand: the operator's account and role commands, their records, and their errors.
func TestUsersCommand(t *testing.T) {
	name := uniq("ops")
	dbArgs := []string{"--database-url", db.URL}
	with := func(args ...string) []string { return append(args, dbArgs...) }

	out, stderr, err := usersCLI(t, "pw-1\n", with("create", name, "--role", "auditor", "--password-stdin", "--by", "carol")...)
	if err != nil || !strings.Contains(out, "with the auditor role, recorded as done by carol") {
		t.Fatalf("create: %v\n%s%s", err, out, stderr)
	}
	for _, tc := range []struct {
		name, stdin string
		args        []string
		usage       bool   // a command line error (exit 2), its message on stderr
		want        string // in the error or, for usage errors, on stderr
	}{
		{"create an existing employee", "pw\n", with("create", name, "--role", "admin", "--password-stdin"), false, "exists already"},
		{"create with an unknown role", "pw\n", with("create", uniq("x"), "--role", "root", "--password-stdin"), true, `unknown role "root": want admin or auditor`},
		{"create without a role", "pw\n", with("create", uniq("x"), "--password-stdin"), true, "need --role and --password-stdin"},
		{"create without --password-stdin", "pw\n", with("create", uniq("x"), "--role", "admin"), true, "need --role and --password-stdin"},
		{"create with an empty password", "\n", with("create", uniq("x"), "--role", "admin", "--password-stdin"), false, "1 to 256 bytes"},
		{"create with a long password", strings.Repeat("p", 257), with("create", uniq("x"), "--role", "admin", "--password-stdin"), false, "1 to 256 bytes"},
		{"create an invalid name", "pw\n", with("create", " x", "--role", "admin", "--password-stdin"), true, "white space"},
		{"create without a name", "pw\n", with("create", "--role", "admin", "--password-stdin"), true, "want NAME"},
		{"grant to an unknown employee", "", with("grant", uniq("nobody"), "admin"), false, "no employee named"},
		{"grant an unknown role", "", with("grant", name, "root"), true, `unknown role "root"`},
		{"grant a role held", "", with("grant", name, "auditor"), false, "already has the role auditor"},
		{"grant without a role", "", with("grant", name), true, "want NAME ROLE"},
		{"revoke a role not held", "", with("revoke", name, "admin"), false, "does not have the role admin"},
		{"revoke from an unknown employee", "", with("revoke", uniq("nobody"), "admin"), false, "no employee named"},
		{"no database", "", []string{"grant", name, "admin", "--database-url", ""}, true, "no database"},
		{"unknown subcommand", "", []string{"promote", name}, true, `unknown command "promote"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := usersCLI(t, tc.stdin, tc.args...)
			switch {
			case tc.usage && (!errors.Is(err, errUsage) || !strings.Contains(stderr, tc.want)):
				t.Errorf("want a usage error saying %q, got %v\n%s%s", tc.want, err, out, stderr)
			case !tc.usage && (err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("want an error saying %q, got %v\n%s%s", tc.want, err, out, stderr)
			}
		})
	}

	// Flags may come before or after the arguments.
	if out, stderr, err := usersCLI(t, "", append([]string{"grant", "--by", "dave"}, append(dbArgs, name, "admin")...)...); err != nil || !strings.Contains(out, "granted admin to "+name) {
		t.Fatalf("grant: %v\n%s%s", err, out, stderr)
	}
	out, stderr, err = usersCLI(t, "", with("list")...)
	if err != nil || !slices.ContainsFunc(strings.Split(out, "\n"), func(line string) bool {
		return slices.Equal(strings.Fields(line), []string{name, "admin,auditor"})
	}) {
		t.Errorf("list: %v, want a line %q with admin,auditor:\n%s%s", err, name, out, stderr)
	}
	if out, stderr, err := usersCLI(t, "", with("revoke", name, "auditor", "--by", "erin")...); err != nil || !strings.Contains(out, "revoked auditor from "+name) {
		t.Fatalf("revoke: %v\n%s%s", err, out, stderr)
	}
	out, stderr, err = usersCLI(t, "", with("history", name)...)
	if err != nil {
		t.Fatalf("history: %v\n%s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("history of %s: want a header and 3 entries, got\n%s", name, out)
	}
	for i, want := range [][]string{{"create", "auditor", "carol"}, {"grant", "admin", "dave"}, {"revoke", "auditor", "erin"}} {
		f := strings.Fields(lines[i+1])
		if len(f) < 7 || f[2] != want[0] || f[3] != name || f[4] != want[1] || f[5] != want[2] {
			t.Errorf("history entry %d: %q, want %v", i+1, lines[i+1], want)
		}
	}
	if out, _, err := usersCLI(t, "", with("history")...); err != nil || !strings.Contains(out, name) {
		t.Errorf("history of everyone lacks %s: %v", name, err)
	}
}

// TestRoleChangesAppendOnly: the database refuses to change or remove the record.
func TestRoleChangesAppendOnly(t *testing.T) {
	ensureRole(t, db.URL, uniq("ops"), auth.RoleAuditor)
	ctx := context.Background()
	for _, stmt := range []string{
		`UPDATE role_changes SET actor = 'someone else'`,
		`DELETE FROM role_changes`,
		`TRUNCATE role_changes`,
	} {
		_, err := db.Pool.Exec(ctx, stmt)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23001" { // restrict_violation
			t.Errorf("%s: %v, want restrict_violation", stmt, err)
		}
	}
}

// TestCommandHelp: the users and token commands list only their own flags and exit 0.
func TestCommandHelp(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		want, not []string
	}{
		{[]string{"token", "-h"}, []string{"-user", "-signing-key-file", "-token-ttl", "-database-url"}, []string{"-port", "-admin", "-verification-key-file", "-api"}},
		{[]string{"users", "-h"}, []string{"create NAME --role ROLE --password-stdin", "grant NAME ROLE", "revoke NAME ROLE", "history"}, nil},
		{[]string{"users", "create", "-h"}, []string{"-role", "-password-stdin", "-by", "-database-url"}, []string{"-port", "-signing-key-file"}},
		{[]string{"users", "grant", "--help"}, []string{"-by", "-database-url"}, []string{"-role", "-port"}},
		{[]string{"users", "revoke", "-h"}, []string{"-by", "-database-url"}, []string{"-role", "-port"}},
		{[]string{"users", "list", "-h"}, []string{"-database-url"}, []string{"-by", "-port"}},
		{[]string{"users", "history", "-h"}, []string{"-database-url"}, []string{"-by", "-port"}},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errb); code != 0 {
			t.Errorf("%v: exit %d, want 0\n%s", tc.args, code, errb.String())
		}
		help := out.String() + errb.String()
		for _, w := range tc.want {
			if !strings.Contains(help, w) {
				t.Errorf("%v: help lacks %q:\n%s", tc.args, w, help)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(help, n+" ") || strings.Contains(help, n+"\n") {
				t.Errorf("%v: help lists %q:\n%s", tc.args, n, help)
			}
		}
	}
}

// TestTokenCommand: tokens only for employees who exist, never a key created.
func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nowhere", "jwt-signing.pem")
	run1 := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"token"}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	code, msg := run1("--user", "admin", "--database-url", db.URL, "--signing-key-file", missing)
	if code != 1 || !strings.Contains(msg, "cannot find the signing key file "+missing) {
		t.Errorf("missing key: exit %d: %s", code, msg)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ledger token created %s: %v", filepath.Dir(missing), err)
	}
	ts := startTestService(t)
	nobody := uniq("nobody")
	code, msg = run1("--user", nobody, "--database-url", db.URL, "--signing-key-file", ts.signingKeyFile)
	if code != 1 || !strings.Contains(msg, "no employee named") || !strings.Contains(msg, nobody) {
		t.Errorf("unknown employee: exit %d: %s", code, msg)
	}
	if code, msg = run1("--user", "admin", "--admin", "--database-url", db.URL, "--signing-key-file", ts.signingKeyFile); code != 2 {
		t.Errorf("--admin: exit %d, want 2 (no such flag): %s", code, msg)
	}
	if code, msg = run1("--user", "admin", "--signing-key-file", ts.signingKeyFile, "--database-url", ""); code != 2 || !strings.Contains(msg, "no database") {
		t.Errorf("no database: exit %d: %s", code, msg)
	}
	// The suite's admin gets a token naming the role, which the service accepts.
	tok := mintToken(t, ts, "admin")
	if rs := tokenRoles(t, ts, tok); rs != auth.RolesOf(auth.RoleAdmin) {
		t.Errorf("token of the admin names %s", rs)
	}
	wantStatus(t, ts.api.do(t, http.MethodGet, "/api/admin/projections", tok, nil), http.StatusOK)
}

// TestE2EOperatorBinary: the real binary creates an admin from a piped password and records
// the operating-system user; serve refuses APP_ADMIN_USERS, naming what replaced it.
func TestE2EOperatorBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	bin := ledgerBinary(t)
	name := uniq("first-admin")
	cmd := exec.Command(bin, "users", "create", name, "--role", "admin", "--password-stdin")
	cmd.Env = append(os.Environ(), "APP_POSTGRES_URL="+db.URL)
	cmd.Stdin = strings.NewReader("s3cret-from-a-pipe\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("users create: %v\n%s", err, out)
	}
	var changes []app.RoleChange
	rows, err := db.Pool.Query(context.Background(), `SELECT actor, os_user FROM role_changes WHERE username = $1`, name)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c app.RoleChange
		if err := rows.Scan(&c.Actor, &c.OSUser); err != nil {
			t.Fatal(err)
		}
		changes = append(changes, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 1 || changes[0].Actor != me.Username || changes[0].OSUser != me.Username {
		t.Errorf("recorded %+v, want one change by the OS user %q", changes, me.Username)
	}

	serve := exec.Command(bin, "serve", "--port", "0")
	serve.Env = append(ledgerEnv(db.URL, t.TempDir()), "APP_ADMIN_USERS=admin")
	out, err := serve.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "APP_ADMIN_USERS is no longer supported") ||
		!strings.Contains(string(out), "ledger users grant NAME admin") {
		t.Errorf("serve with APP_ADMIN_USERS: %v\n%s", err, out)
	}
}

// TestRoleCacheTTLBounds: a revoked role may keep working a few seconds at most.
func TestRoleCacheTTLBounds(t *testing.T) {
	for v, ok := range map[string]bool{"0": true, "2s": true, "5s": true, "5.001s": false, "1m": false, "-1s": false} {
		var cfg serveConfig
		fs := newFlagSet("serve", io.Discard)
		cfg.bind(fs)
		if err := fs.Parse([]string{"--database-url", "postgres://x/y", "--role-cache-ttl", v}); err != nil {
			t.Fatal(err)
		}
		err := cfg.validate()
		if (err == nil) != ok || (err != nil && !strings.Contains(err.Error(), "APP_ROLE_CACHE_TTL")) {
			t.Errorf("--role-cache-ttl %s: %v", v, err)
		}
	}
}
