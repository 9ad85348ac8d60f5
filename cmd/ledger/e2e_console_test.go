package main

// The console in a real browser: Debian's chromium, headless, driven through chromedp, against
// the real service on its own PostgreSQL database. Each test writes screenshots of the pages
// it visits to $LEDGER_CONSOLE_SCREENSHOTS (make console-screenshots: docs/console), else to a
// directory under the system's temporary one.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/pgtest"
)

// chromium returns the browser to drive: $LEDGER_CHROMIUM, else the first of the usual names
// on the PATH.
func chromium() (string, bool) {
	if p := os.Getenv("LEDGER_CHROMIUM"); p != "" {
		return p, true
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, true
		}
	}
	return "", false
}

// browser starts a headless browser of its own for the test and returns its first tab.
func browser(t testing.TB) context.Context {
	t.Helper()
	path, ok := chromium()
	if !ok {
		t.Skip("console browser tests skipped: no chromium on this machine. Install Debian's chromium " +
			"(sudo apt-get install -y chromium; .ci/run does it) or name a Chrome binary in LEDGER_CHROMIUM")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests may run as root, where chromium's sandbox refuses to start
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1000),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// consoleService starts the service with the console on a database of its own.
func consoleService(t *testing.T, prefix string, adjust ...func(*serveConfig)) (*testService, *pgtest.Database) {
	t.Helper()
	own := pgtest.New(t, prefix)
	ts := startTestService(t, append([]func(*serveConfig){func(c *serveConfig) {
		c.DatabaseURL, c.DBMaxConns, c.RunConsole = own.URL, 12, true
	}}, adjust...)...)
	return ts, own
}

func browse(t testing.TB, ctx context.Context, what string, actions ...chromedp.Action) {
	t.Helper()
	if err := chromedp.Run(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// signIn signs name in through the sign-in form and waits for the page it lands on.
func signIn(t testing.TB, ctx context.Context, base, name, password string) string {
	t.Helper()
	var loc string
	browse(t, ctx, "sign in as "+name,
		chromedp.Navigate(base+"/console/signin"),
		chromedp.WaitVisible("#username", chromedp.ByQuery),
		chromedp.SendKeys("#username", name, chromedp.ByQuery),
		chromedp.SendKeys("#password", password, chromedp.ByQuery),
		chromedp.Submit("#signin", chromedp.ByQuery),
		chromedp.WaitVisible("main > *:not(.signin)", chromedp.ByQuery),
		chromedp.Location(&loc))
	return loc
}

// screenshot writes the page as it is to NAME.png in the screenshot directory.
func screenshot(t testing.TB, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("LEDGER_CONSOLE_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "ledger-console-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var png []byte
	browse(t, ctx, "screenshot "+name, chromedp.FullScreenshot(&png, 100))
	file := filepath.Join(dir, name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", file)
}

// errorStatus returns the status an error page shows, 0 when the page is no error page.
func errorStatus(t *testing.T, ctx context.Context) int {
	t.Helper()
	var status string
	browse(t, ctx, "read the error status", chromedp.Evaluate(
		`(document.querySelector("#error") || {dataset: {}}).dataset.status || ""`, &status))
	n, _ := strconv.Atoi(status)
	return n
}

// sessionCookie returns the console's session cookie as the browser keeps it.
func sessionCookie(t *testing.T, ctx context.Context) *network.Cookie {
	t.Helper()
	var cookies []*network.Cookie
	browse(t, ctx, "read cookies", chromedp.ActionFunc(func(ctx context.Context) error {
		var err error
		cookies, err = network.GetCookies().Do(ctx)
		return err
	}))
	for _, c := range cookies {
		if c.Name == "ledger_console" {
			return c
		}
	}
	return nil
}

// plainClient is an HTTP client that does not follow redirects, carrying the cookie.
func plainClient(cookie *network.Cookie) *http.Client {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if cookie != nil {
		u, _ := url.Parse("http://" + cookie.Domain + "/console/")
		jar.SetCookies(u, []*http.Cookie{{Name: cookie.Name, Value: cookie.Value, Path: "/console"}})
	}
	return hc
}

func bodyOf(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// recordedAt returns when the employee's stream version was recorded.
func recordedAt(t *testing.T, d *pgtest.Database, name string, version int) time.Time {
	t.Helper()
	var at time.Time
	err := d.Pool.QueryRow(context.Background(), `SELECT e.recorded_at FROM events e JOIN users u ON e.stream_id = 'account-' || u.account_id
		WHERE u.username = $1 AND e.stream_version = $2`, name, version).Scan(&at)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// TestConsoleAuditor: an auditor signs in, finds an account by prefix, sees one chart point
// per balance change ending at /api/info's coins, travels to a time between two purchases,
// downloads the events, and watches a transfer arrive in the log's live tail.
func TestConsoleAuditor(t *testing.T) {
	ctx := browser(t)
	ts, own := consoleService(t, "cmd_console_auditor")
	api, base := ts.api, "http://"+ts.svc.addr
	auditor := uniq("erin")
	ensureRole(t, own.URL, auditor, auth.RoleAuditor)
	alice, bob := uniq("alice"), uniq("bob")
	at, bt := api.login(t, alice), api.login(t, bob)
	wantOK(t, api.buy(t, at, "cup"))
	time.Sleep(20 * time.Millisecond) // two purchases recorded at two distinct times
	wantOK(t, api.buy(t, at, "book"))
	wantOK(t, api.sendCoin(t, bt, alice, 30))
	wantOK(t, api.sendCoin(t, at, bob, 10))
	coins := api.info(t, at).Coins

	if loc := signIn(t, ctx, base, auditor, testPassword); !strings.HasSuffix(loc, "/console/") {
		t.Fatalf("an auditor lands on %s, want the overview", loc)
	}
	var holds string
	browse(t, ctx, "overview", chromedp.WaitVisible("#invariant", chromedp.ByQuery),
		chromedp.AttributeValue("#invariant", "data-holds", &holds, nil, chromedp.ByQuery))
	if holds != "true" {
		t.Errorf("the overview says the bank invariant does not hold")
	}
	screenshot(t, ctx, "overview")

	// Search by prefix: alice's unique prefix finds her alone.
	var names []string
	browse(t, ctx, "search accounts",
		chromedp.Navigate(base+"/console/accounts"),
		chromedp.WaitVisible("#prefix", chromedp.ByQuery),
		chromedp.SendKeys("#prefix", alice[:len(alice)-2], chromedp.ByQuery),
		chromedp.Submit("#prefix", chromedp.ByQuery),
		// The list before the search has the same table: wait for the searched page, which
		// renders the prefix as the field's value.
		chromedp.WaitVisible(`#prefix[value="`+alice[:len(alice)-2]+`"]`, chromedp.ByQuery),
		chromedp.WaitVisible("#accounts tbody a", chromedp.ByQuery),
		chromedp.Evaluate(`Array.from(document.querySelectorAll("#accounts tbody a")).map(a => a.textContent)`, &names))
	if len(names) != 1 || names[0] != alice {
		t.Fatalf("accounts starting with %q: %v, want [%s]", alice[:len(alice)-2], names, alice)
	}
	screenshot(t, ctx, "accounts")

	// The chart: one point per change of the balance (welcome grant, two purchases, a transfer
	// in, a transfer out), the last at /api/info's coins.
	var points [][]int64
	browse(t, ctx, "open the account",
		chromedp.Click("#accounts tbody a", chromedp.ByQuery),
		chromedp.WaitVisible("#chart", chromedp.ByQuery),
		chromedp.Evaluate(`Array.from(document.querySelectorAll("#chart circle")).map(c => [+c.dataset.version, +c.dataset.balance])`, &points))
	want := [][]int64{{2, 1000}, {3, 980}, {4, 930}, {5, 960}, {6, 950}}
	if fmt.Sprint(points) != fmt.Sprint(want) {
		t.Errorf("chart points (version, balance) %v, want %v", points, want)
	}
	if len(points) == 0 || points[len(points)-1][1] != coins {
		t.Errorf("the chart's last point %v, /api/info's coins %d", points, coins)
	}
	var chain []string
	var titles []string
	browse(t, ctx, "read the events table",
		chromedp.Evaluate(`Array.from(document.querySelectorAll("#events tbody td[data-chain]")).map(td => td.dataset.chain)`, &chain),
		chromedp.Evaluate(`Array.from(document.querySelectorAll("#chart circle title")).map(t => t.textContent)`, &titles))
	if len(chain) != 6 || strings.Contains(strings.Join(chain, ","), "false") {
		t.Errorf("chain state of the 6 events: %v", chain)
	}
	if len(titles) != 5 || !strings.Contains(titles[1], "ItemPurchased") {
		t.Errorf("point titles do not name their events: %q", titles)
	}
	screenshot(t, ctx, "account")

	// As of a time between the two purchases: after the cup, before the book.
	cup, book := recordedAt(t, own, alice, 3), recordedAt(t, own, alice, 4)
	if !cup.Before(book) {
		t.Fatalf("the purchases were recorded at %v and %v", cup, book)
	}
	between := cup.Add(book.Sub(cup) / 2).UTC().Format(time.RFC3339Nano)
	var then string
	browse(t, ctx, "as of "+between,
		chromedp.SetValue("#asof", between, chromedp.ByQuery),
		chromedp.Submit("#asof-form", chromedp.ByQuery),
		chromedp.WaitVisible(`#asof[value="`+between+`"]`, chromedp.ByQuery),
		chromedp.Text("#coins", &then, chromedp.ByQuery))
	if then != "980" {
		t.Errorf("as of %s the page shows %q coins, want 980 (after the cup, before the book)", between, then)
	}

	// Downloads: the same records as the audit endpoint, as NDJSON and CSV.
	hc := plainClient(sessionCookie(t, ctx))
	for ext, lines := range map[string]int{"ndjson": 6, "csv": 7} {
		res, err := hc.Get(base + "/console/accounts/" + alice + "/events." + ext)
		if err != nil {
			t.Fatal(err)
		}
		body := bodyOf(t, res)
		if res.StatusCode != http.StatusOK || strings.Count(body, "\n") != lines {
			t.Errorf("events.%s: %d with %d lines, want 200 with %d:\n%s", ext, res.StatusCode, strings.Count(body, "\n"), lines, body)
		}
	}

	// The live tail: a transfer made through the API appears at the top of the open log.
	browse(t, ctx, "open the log", chromedp.Navigate(base+"/console/log"),
		chromedp.WaitVisible(`#tail[data-state="live"]`, chromedp.ByQuery))
	screenshot(t, ctx, "log")
	sent := time.Now()
	wantOK(t, api.sendCoin(t, bt, alice, 7))
	var ids []string
	browse(t, ctx, "wait for the transfer in the tail",
		chromedp.WaitVisible(`#log-rows tr.new:nth-child(2)`, chromedp.ByQuery),
		chromedp.Evaluate(`Array.from(document.querySelectorAll("#log-rows tr.new")).map(tr => tr.children[4].textContent)`, &ids))
	t.Logf("the transfer showed in the live tail %v after its sendCoin answered", time.Since(sent).Round(time.Millisecond))
	if got := strings.Join(ids, ","); got != "CoinsReceived,CoinsSent" && got != "CoinsSent,CoinsReceived" {
		t.Errorf("new rows in the tail: %v, want the transfer's two halves", ids)
	}
}

// TestConsoleRebuild: an admin rebuilds a projection from the console and watches its progress
// through to the switch, while API traffic keeps getting correct answers; a second rebuild
// meanwhile is refused with a message that says why; an auditor may not rebuild.
func TestConsoleRebuild(t *testing.T) {
	ctx := browser(t)
	ts, own := consoleService(t, "cmd_console_rebuild")
	api, base := ts.api, "http://"+ts.svc.addr
	admin := uniq("boss")
	ensureRole(t, own.URL, admin, auth.RoleAdmin)
	p, q := uniq("p"), uniq("q")
	pt, _ := api.login(t, p), api.login(t, q)
	for range 20 {
		api.login(t, uniq("seed"))
	}

	// Traffic: p sends q one coin at a time and reads its balance back, which must be exactly
	// what it should be, throughout the rebuild.
	stop := make(chan struct{})
	var requests, wrong, busy atomic.Int64
	var traffic sync.WaitGroup
	var problem atomic.Value
	traffic.Add(1)
	go func() {
		defer traffic.Done()
		expect := int64(1000)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r := api.do(t, "POST", "/api/sendCoin", pt, map[string]any{"toUser": q, "amount": 1})
			requests.Add(1)
			if r.Status == http.StatusServiceUnavailable {
				// Out of time on a crowded machine: an answer that says so, not a wrong one.
				// Whether it took effect is unknown, so the balance is read back as it is.
				busy.Add(1)
				expect = api.info(t, pt).Coins
				continue
			}
			if r.Status != http.StatusOK {
				wrong.Add(1)
				problem.Store(r.String())
				continue
			}
			expect--
			if got := api.info(t, pt).Coins; got != expect {
				wrong.Add(1)
				problem.Store(fmt.Sprintf("p has %d coins, want %d", got, expect))
				expect = got
			}
			requests.Add(1)
		}
	}()

	signIn(t, ctx, base, admin, testPassword)
	var job, phases, result string
	browse(t, ctx, "start the rebuild",
		chromedp.Navigate(base+"/console/projections"),
		chromedp.WaitVisible("#rebuild-balance", chromedp.ByQuery),
		chromedp.Click("#rebuild-balance", chromedp.ByQuery),
		chromedp.WaitVisible("#job", chromedp.ByQuery),
		chromedp.AttributeValue("#job", "data-job", &job, nil, chromedp.ByQuery))

	// A second rebuild while the first runs (it keeps running for its grace period after the
	// switch): refused, with the reason.
	second, cancelSecond := chromedp.NewContext(ctx)
	var refusal string
	browse(t, second, "a second rebuild",
		chromedp.Navigate(base+"/console/projections"),
		chromedp.WaitVisible("#rebuild-inventory", chromedp.ByQuery),
		chromedp.Click("#rebuild-inventory", chromedp.ByQuery),
		chromedp.WaitVisible("#error", chromedp.ByQuery),
		chromedp.Text("#error .message", &refusal, chromedp.ByQuery))
	if status := errorStatus(t, second); status != http.StatusConflict || !strings.Contains(refusal, "already running") {
		t.Errorf("a second rebuild answered %d %q, want 409 saying one is already running", status, refusal)
	}
	cancelSecond()

	browse(t, ctx, "watch the rebuild to its end",
		chromedp.WaitVisible(`#job[data-finished="true"]`, chromedp.ByQuery),
		chromedp.AttributeValue("#job", "data-phases", &phases, nil, chromedp.ByQuery),
		chromedp.Text("#job-result", &result, chromedp.ByQuery))
	close(stop)
	traffic.Wait()
	for _, phase := range []string{"building", "switching", "done"} {
		if !strings.Contains(phases, phase) {
			t.Errorf("the progress showed phases %q, missing %q", phases, phase)
		}
	}
	if !strings.Contains(result, "balance rebuilt: v1 → v2") {
		t.Errorf("the rebuild's result: %q", result)
	}
	if wrong.Load() != 0 || requests.Load() < 2 {
		t.Errorf("API traffic during the rebuild: %d of %d answers wrong (last: %v)", wrong.Load(), requests.Load(), problem.Load())
	}
	t.Logf("rebuild %s: phases %s; %d API requests during it, all correct (%d answered 503)", job, phases, requests.Load(), busy.Load())
	var serving string
	browse(t, ctx, "the projections after the rebuild",
		chromedp.Navigate(base+"/console/projections?job="+job),
		chromedp.WaitVisible(`#projections tr[data-name="balance"]`, chromedp.ByQuery),
		chromedp.Text(`#projections tr[data-name="balance"] td:nth-child(2)`, &serving, chromedp.ByQuery))
	if serving != "v2" {
		t.Errorf("balance serves %s after the rebuild, want v2", serving)
	}
	screenshot(t, ctx, "projections")
}

// TestConsoleVerify: the verifier on clean data says so; after an event's payload is changed in
// the database it lists that event, linked to its row on the account's page. An auditor may run
// it, and may not rebuild.
func TestConsoleVerify(t *testing.T) {
	ctx := browser(t)
	ts, own := consoleService(t, "cmd_console_verify")
	api, base := ts.api, "http://"+ts.svc.addr
	auditor := uniq("erin")
	ensureRole(t, own.URL, auditor, auth.RoleAuditor)
	alice, bob := uniq("alice"), uniq("bob")
	at, bt := api.login(t, alice), api.login(t, bob)
	wantOK(t, api.buy(t, at, "book"))
	wantOK(t, api.sendCoin(t, bt, alice, 40))
	waitAllProjected(t, own)

	signIn(t, ctx, base, auditor, testPassword)
	verify := func() (ok string, links []string) {
		browse(t, ctx, "verify",
			chromedp.Navigate(base+"/console/verify"),
			chromedp.WaitVisible("#verify", chromedp.ByQuery),
			chromedp.Click("#verify", chromedp.ByQuery),
			chromedp.WaitVisible("#report", chromedp.ByQuery),
			chromedp.AttributeValue("#report", "data-ok", &ok, nil, chromedp.ByQuery),
			chromedp.Evaluate(`Array.from(document.querySelectorAll("#mismatches a")).map(a => a.getAttribute("href") + " " + a.textContent)`, &links))
		return ok, links
	}
	if ok, links := verify(); ok != "true" || len(links) != 0 {
		t.Fatalf("clean data: ok=%s mismatches %v", ok, links)
	}
	var csrf string
	browse(t, ctx, "read the form's token", chromedp.Value(`input[name="csrf"]`, &csrf, chromedp.ByQuery))

	var aliceID uuid.UUID
	if err := own.Pool.QueryRow(context.Background(), `SELECT account_id FROM users WHERE username = $1`, alice).Scan(&aliceID); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		`ALTER TABLE events DISABLE TRIGGER USER`,
		`UPDATE events SET payload_bytes = convert_to(replace(convert_from(payload_bytes, 'UTF8'), '"welcome"', '"a quiet bonus"'), 'UTF8') WHERE stream_id = 'account-` + aliceID.String() + `' AND stream_version = 2`,
		`ALTER TABLE events ENABLE TRIGGER USER`,
	} {
		if _, err := own.Pool.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	ok, links := verify()
	screenshot(t, ctx, "verify")
	wantLink := "/console/accounts/" + alice + "?v=2#v2 event account-" + aliceID.String() + " version 2 "
	if ok != "false" || len(links) != 1 || !strings.HasPrefix(links[0], wantLink) || !strings.Contains(links[0], "hash mismatch") {
		t.Fatalf("after tampering: ok=%s mismatches %q, want one starting %q", ok, links, wantLink)
	}
	var chain string
	browse(t, ctx, "follow the link", chromedp.Click("#mismatches a", chromedp.ByQuery),
		chromedp.WaitVisible("#v2", chromedp.ByQuery),
		chromedp.AttributeValue("#v2 td[data-chain]", "data-chain", &chain, nil, chromedp.ByQuery))
	if chain != "false" {
		t.Errorf("the tampered event's row says the chain holds")
	}

	// An auditor changes nothing: a rebuild, with a valid form token, is refused.
	hc := plainClient(sessionCookie(t, ctx))
	res, err := hc.PostForm(base+"/console/projections/rebuild", url.Values{"csrf": {csrf}, "name": {"balance"}})
	if err != nil {
		t.Fatal(err)
	}
	if body := bodyOf(t, res); res.StatusCode != http.StatusForbidden || !strings.Contains(body, "admin") {
		t.Errorf("an auditor's rebuild: %d\n%s", res.StatusCode, body)
	}
}

// TestConsoleEmployeeAndSessions: an employee lands on their own account and can open no
// other, nor the log; a form posted without its CSRF token is refused; signing out ends the
// session for whoever holds its cookie; wrong passwords are told, then the login limit is.
func TestConsoleEmployeeAndSessions(t *testing.T) {
	ctx := browser(t)
	ts, _ := consoleService(t, "cmd_console_employee", func(c *serveConfig) {
		c.AuthUserClientFailures, c.AuthFailureWindow = 3, 15*time.Minute
	})
	api, base := ts.api, "http://"+ts.svc.addr
	carol, dave := uniq("carol"), uniq("dave")
	api.login(t, carol)
	api.login(t, dave)

	// Wrong passwords: three are told as such, the fourth meets the limit.
	for i := 1; i <= 4; i++ {
		var msg string
		browse(t, ctx, "a wrong password",
			chromedp.Navigate(base+"/console/signin"),
			chromedp.WaitVisible("#username", chromedp.ByQuery),
			chromedp.SendKeys("#username", dave, chromedp.ByQuery),
			chromedp.SendKeys("#password", "not the password", chromedp.ByQuery),
			chromedp.Submit("#signin", chromedp.ByQuery),
			chromedp.WaitVisible("#message", chromedp.ByQuery),
			chromedp.Text("#message", &msg, chromedp.ByQuery))
		want := "Wrong username or password."
		if i == 4 {
			want = "too many failed logins for this username from this address"
			screenshot(t, ctx, "signin")
		}
		if !strings.HasPrefix(msg, want) {
			t.Errorf("attempt %d: %q, want %q", i, msg, want)
		}
	}

	if loc := signIn(t, ctx, base, carol, testPassword); !strings.HasSuffix(loc, "/console/accounts/"+carol) {
		t.Fatalf("an employee lands on %s, want their own account", loc)
	}
	ck := sessionCookie(t, ctx)
	if ck == nil || !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteStrict || ck.Secure {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP", ck)
	}
	for _, path := range []string{"/console/accounts/" + dave, "/console/log", "/console/", "/console/accounts", "/console/verify"} {
		browse(t, ctx, "open "+path, chromedp.Navigate(base+path), chromedp.WaitVisible("main > *", chromedp.ByQuery))
		if status := errorStatus(t, ctx); status != http.StatusForbidden {
			t.Errorf("an employee opening %s: status %d, want a 403 page", path, status)
		}
		if path == "/console/accounts/"+dave {
			screenshot(t, ctx, "forbidden")
		}
	}

	// Forms without their token are refused, and change nothing: the session survives a
	// sign-out posted without it.
	hc := plainClient(ck)
	for _, path := range []string{"/console/signout", "/console/verify", "/console/projections/rebuild"} {
		res, err := hc.PostForm(base+path, url.Values{"name": {"balance"}})
		if err != nil {
			t.Fatal(err)
		}
		if body := bodyOf(t, res); res.StatusCode != http.StatusForbidden || !strings.Contains(body, "security token") {
			t.Errorf("POST %s without the CSRF token: %d\n%s", path, res.StatusCode, body)
		}
	}
	res, err := hc.Get(base + "/console/accounts/" + carol)
	if err != nil {
		t.Fatal(err)
	}
	if bodyOf(t, res); res.StatusCode != http.StatusOK {
		t.Fatalf("the session after refused forms: %d, want 200", res.StatusCode)
	}

	// Signing out ends the session, for the browser and for anyone holding a copy of its cookie.
	var loc string
	browse(t, ctx, "sign out", chromedp.Navigate(base+"/console/accounts/"+carol),
		chromedp.WaitVisible("#signout", chromedp.ByQuery),
		chromedp.Click("#signout", chromedp.ByQuery),
		chromedp.WaitVisible("#signin", chromedp.ByQuery),
		chromedp.Navigate(base+"/console/accounts/"+carol),
		chromedp.WaitVisible("#signin", chromedp.ByQuery),
		chromedp.Location(&loc))
	if !strings.Contains(loc, "/console/signin") {
		t.Errorf("after signing out the account page went to %s", loc)
	}
	res, err = hc.Get(base + "/console/accounts/" + carol)
	if err != nil {
		t.Fatal(err)
	}
	if bodyOf(t, res); res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/console/signin") {
		t.Errorf("the old cookie after sign-out: %d to %q, want a redirect to sign in", res.StatusCode, res.Header.Get("Location"))
	}

	// Behind TLS (a proxy that says so) the cookie is Secure.
	res, err = plainClient(nil).Get(base + "/console/signin")
	if err != nil {
		t.Fatal(err)
	}
	bodyOf(t, res)
	req, _ := http.NewRequest(http.MethodGet, base+"/console/signin", nil)
	req.Header.Set("X-Forwarded-Proto", "https")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	bodyOf(t, res)
	if sc := res.Header.Get("Set-Cookie"); !strings.Contains(sc, "Secure") || !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Strict") {
		t.Errorf("a cookie set behind TLS: %q", sc)
	}
}

// TestConsoleOff: --console=false leaves /console/ unrouted.
func TestConsoleOff(t *testing.T) {
	ts := startTestService(t)
	res, err := http.Get("http://" + ts.svc.addr + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /console/ with the console off: %d, want 404", res.StatusCode)
	}
}

// consoleClient signs name in through the sign-in form over plain HTTP and returns a client
// that keeps the session's cookie and does not follow redirects.
func consoleClient(t *testing.T, base, name string) *http.Client {
	t.Helper()
	hc := plainClient(nil)
	res, err := hc.Get(base + "/console/signin")
	if err != nil {
		t.Fatal(err)
	}
	body := bodyOf(t, res)
	_, rest, _ := strings.Cut(body, `name="csrf" value="`)
	token, _, _ := strings.Cut(rest, `"`)
	res, err = hc.PostForm(base+"/console/signin", url.Values{"csrf": {token}, "username": {name}, "password": {testPassword}})
	if err != nil {
		t.Fatal(err)
	}
	if bodyOf(t, res); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in as %s: %d", name, res.StatusCode)
	}
	return hc
}

// TestConsoleBadInput: whatever an address or a form holds, the answer is a page with a 4xx
// status that says what was wrong, never a 5xx; and the sign-in form needs its token.
func TestConsoleBadInput(t *testing.T) {
	ts, own := consoleService(t, "cmd_console_bad_input")
	base := "http://" + ts.svc.addr
	auditor := uniq("erin")
	ensureRole(t, own.URL, auditor, auth.RoleAuditor)
	ts.api.login(t, "alice")
	hc := consoleClient(t, base, auditor)
	for _, tc := range []struct {
		method, path string
		form         url.Values
		status       int
		says         string
	}{
		{"GET", "/console/accounts/nobody-at-all", nil, 404, "no employee is named"},
		{"GET", "/console/accounts/%ff%fe", nil, 400, "not an employee"},
		{"GET", "/console/accounts/a%00b", nil, 400, "not an employee"},
		{"GET", "/console/accounts/" + strings.Repeat("x", 300), nil, 400, "not an employee"},
		{"GET", "/console/accounts/alice?asOf=yesterday", nil, 400, "RFC 3339"},
		{"GET", "/console/accounts/alice?asOf=1999-01-01T00:00:00Z", nil, 404, "no such account at that time"},
		{"GET", "/console/accounts/alice?page=-3&v=x", nil, 200, "alice"},
		{"GET", "/console/accounts?prefix=" + strings.Repeat("a", 65), nil, 400, "at most 64 bytes"},
		{"GET", "/console/accounts?prefix=%00", nil, 400, "NUL"},
		{"GET", "/console/log?before=12", nil, 400, "checkpoint"},
		{"GET", "/console/log/tail?after=x", nil, 400, "checkpoint"},
		{"GET", "/console/jobs/nope/events", nil, 404, "no such job"},
		{"GET", "/console/nowhere", nil, 404, "no page"},
		{"DELETE", "/console/log", nil, 405, "not allowed"},
		{"POST", "/console/signin", url.Values{"username": {auditor}, "password": {testPassword}}, 403, "security token"},
	} {
		var body io.Reader
		if tc.form != nil {
			body = strings.NewReader(tc.form.Encode())
		}
		req, err := http.NewRequest(tc.method, base+tc.path, body)
		if err != nil {
			t.Fatal(err)
		}
		if tc.form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		page := bodyOf(t, res)
		if res.StatusCode != tc.status || !strings.Contains(page, tc.says) || !strings.Contains(res.Header.Get("Content-Type"), "text/html") {
			t.Errorf("%s %s: %d %q, want %d saying %q", tc.method, tc.path, res.StatusCode, res.Header.Get("Content-Type"), tc.status, tc.says)
		}
	}
}

// BenchmarkConsoleChartInBrowser measures how long the browser takes to show the page of an
// account with 10,000 events (LEDGER_BENCH_ACCOUNT_EVENTS), chart included: from the start of
// the navigation to the load event, as the browser's Navigation Timing reports it, and the
// server's share of it (the response's first byte).
//
//	go test -run '^$' -bench ConsoleChartInBrowser -benchtime 5x ./cmd/ledger/
func BenchmarkConsoleChartInBrowser(b *testing.B) {
	ctx := browser(b)
	n := 10_000
	if v, err := strconv.Atoi(os.Getenv("LEDGER_BENCH_ACCOUNT_EVENTS")); err == nil && v > 1 {
		n = v
	}
	own := pgtest.New(b, "cmd_console_chart")
	dir := b.TempDir()
	cfg := serveConfig{Host: "127.0.0.1", DatabaseURL: own.URL, SigningKeyFile: filepath.Join(dir, "sign.pem"),
		VerificationKeyFile: filepath.Join(dir, "verify.pem"), TokenTTL: time.Hour, RunAPI: true, RunProjectors: true,
		RunConsole: true, LogLevel: "warn", DBMaxConns: 12, AppendWriters: 4, ReadSlots: 4, ShutdownTimeout: 20 * time.Second,
		RequestTimeout: 10 * time.Second, MaxConnections: defaultMaxConnections, AdminAddr: "off"}
	svc, err := startService(context.Background(), cfg, newLogger(io.Discard, slog.LevelWarn))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Close() })
	base := "http://" + svc.addr
	api := newAPIClient(b, base)
	api.waitReady(b)
	auditor := uniq("erin")
	ensureRole(b, own.URL, auditor, auth.RoleAuditor)
	hot := uniq("hot")
	ht := api.login(b, hot)
	others := make([]string, 8)
	tokens := make([]string, len(others))
	for i := range others {
		others[i] = uniq("peer")
		tokens[i] = api.login(b, others[i])
	}
	// Half the events are coins received, the other half coins sent back: one event each.
	began := time.Now()
	var wg sync.WaitGroup
	for w := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n/2; i += len(others) {
				if r := api.do(b, "POST", "/api/sendCoin", tokens[w], map[string]any{"toUser": hot, "amount": 1}); r.Status != http.StatusOK {
					b.Error(r.String())
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := 0; i < n/2-1; i++ {
		if r := api.sendCoin(b, ht, others[i%len(others)], 1); r.Status != http.StatusOK {
			b.Fatal(r.String())
		}
	}
	b.Logf("wrote %d events to %s in %v", n, hot, time.Since(began).Round(time.Second))
	signIn(b, ctx, base, auditor, testPassword)
	var loads, firstBytes []float64
	var points, changes int
	for b.Loop() {
		var timing []float64
		browse(b, ctx, "open the account",
			chromedp.Navigate(base+"/console/accounts/"+hot),
			chromedp.WaitVisible("#chart", chromedp.ByQuery),
			chromedp.Evaluate(`document.querySelectorAll("#chart circle").length`, &points),
			chromedp.Evaluate(`Array.from(document.querySelectorAll("#chart circle")).reduce((n, c) => n + (+c.dataset.changes || 1), 0)`, &changes),
			chromedp.Poll(`performance.getEntriesByType("navigation")[0].loadEventEnd > 0`, nil),
			chromedp.Evaluate(`(() => { const t = performance.getEntriesByType("navigation")[0]; return [t.loadEventEnd - t.startTime, t.responseStart - t.startTime]; })()`, &timing))
		loads, firstBytes = append(loads, timing[0]), append(firstBytes, timing[1])
	}
	if changes < n-2 {
		b.Fatalf("the chart's %d points stand for %d changes, want every change (%d)", points, changes, n-1)
	}
	b.Logf("%d points for %d changes; load event after %v ms (server's first byte after %v ms)", points, changes, loads, firstBytes)
	slices.Sort(loads)
	b.ReportMetric(loads[len(loads)/2], "load-ms")
	b.ReportMetric(slices.Max(firstBytes), "first-byte-max-ms")
}
