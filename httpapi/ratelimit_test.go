package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeClock is a limiter's time, moved by the test.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func limiterAt(t *testing.T, l AuthLimits) (*AuthLimiter, *fakeClock) {
	t.Helper()
	a := NewAuthLimiter(l)
	if a == nil {
		t.Fatal("NewAuthLimiter returned nil for limits that limit")
	}
	c := &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	a.now = c.now
	return a, c
}

func loginFrom(addr string, forwardedFor ...string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/api/auth", nil)
	r.RemoteAddr = addr
	for _, f := range forwardedFor {
		r.Header.Add("X-Forwarded-For", f)
	}
	return r
}

// fail makes one failed attempt and reports whether it was admitted.
func fail(t *testing.T, a *AuthLimiter, r *http.Request, user string) *tooManyAttempts {
	t.Helper()
	done, err := a.attempt(r, user)
	if err != nil {
		var tm *tooManyAttempts
		if !errors.As(err, &tm) || !errors.Is(err, errTooManyRequests) {
			t.Fatalf("refusal is %T %v, want *tooManyAttempts", err, err)
		}
		return tm
	}
	done(true)
	return nil
}

// TestRateLimitPerUsername: failures for one username are allowed in a burst, then refused with
// a wait that shrinks as time passes; successes cost nothing; other usernames are unaffected.
func TestRateLimitPerUsername(t *testing.T) {
	a, clock := limiterAt(t, AuthLimits{UserFailures: 3, Window: 3 * time.Minute})
	// Successes, as many as you like, cost nothing.
	for i := range 10 {
		done, err := a.attempt(loginFrom("192.0.2.1:1000"), "alice")
		if err != nil {
			t.Fatalf("success %d refused: %v", i, err)
		}
		done(false)
	}
	for i := range 3 {
		if tm := fail(t, a, loginFrom(fmt.Sprintf("192.0.2.%d:1000", i+1)), "alice"); tm != nil {
			t.Fatalf("failure %d refused: %v", i+1, tm)
		}
	}
	tm := fail(t, a, loginFrom("198.51.100.9:1000"), "alice")
	if tm == nil {
		t.Fatal("a fourth failure within the window was admitted")
	}
	if got := tm.retryAfterSeconds(); got != 60 {
		t.Errorf("Retry-After %d, want 60 (one attempt back per minute)", got)
	}
	if !strings.Contains(tm.Error(), "too many failed logins for this username") || !strings.Contains(tm.Error(), "60 seconds") {
		t.Errorf("message %q", tm.Error())
	}
	// A correct password is refused too while the username is out of attempts.
	if _, err := a.attempt(loginFrom("192.0.2.1:1000"), "alice"); err == nil {
		t.Error("an attempt for a username out of attempts was admitted")
	}
	if tm := fail(t, a, loginFrom("192.0.2.1:1000"), "bob"); tm != nil {
		t.Errorf("another username was refused: %v", tm)
	}
	clock.t = clock.t.Add(20 * time.Second)
	if tm := fail(t, a, loginFrom("192.0.2.1:1000"), "alice"); tm == nil || tm.retryAfterSeconds() != 40 {
		t.Errorf("after 20s: %v, want a refusal with Retry-After 40", tm)
	}
	clock.t = clock.t.Add(40 * time.Second)
	if tm := fail(t, a, loginFrom("192.0.2.1:1000"), "alice"); tm != nil {
		t.Errorf("after the minute: %v, want one attempt admitted", tm)
	}
	if tm := fail(t, a, loginFrom("192.0.2.1:1000"), "alice"); tm == nil {
		t.Error("a second attempt after one minute was admitted")
	}
}

// TestRateLimitPerClient: failures from one client across usernames are limited; other
// clients are not, and the refused attempt leaves the username's allowance alone.
func TestRateLimitPerClient(t *testing.T) {
	a, _ := limiterAt(t, AuthLimits{UserFailures: 3, ClientFailures: 4, Window: time.Hour})
	for i := range 4 {
		if tm := fail(t, a, loginFrom("203.0.113.7:4000"), fmt.Sprintf("user%d", i)); tm != nil {
			t.Fatalf("failure %d refused: %v", i+1, tm)
		}
	}
	tm := fail(t, a, loginFrom("203.0.113.7:4001"), "victim")
	if tm == nil || !strings.Contains(tm.Error(), "from this address") {
		t.Fatalf("fifth failure from one client: %v, want refused from this address", tm)
	}
	if got := tm.retryAfterSeconds(); got != 900 {
		t.Errorf("Retry-After %d, want 900 (4 attempts an hour)", got)
	}
	// The refusal took nothing from victim: three failures from elsewhere are still admitted.
	for i := range 3 {
		if tm := fail(t, a, loginFrom("198.51.100.1:4000"), "victim"); tm != nil {
			t.Fatalf("victim failure %d from another client refused: %v", i+1, tm)
		}
	}
	if tm := fail(t, a, loginFrom("198.51.100.2:4000"), "victim"); tm == nil || !strings.Contains(tm.Error(), "for this username") {
		t.Errorf("fourth victim failure: %v, want refused for this username", tm)
	}
	if tm := fail(t, a, loginFrom("203.0.113.7:4000"), "victim"); tm == nil || !strings.Contains(tm.Error(), "for this username and from this address") {
		t.Errorf("both out: %v", tm)
	}
}

// TestRateLimitBounded: however many names are tried, the limiter remembers at most
// MaxTracked of each; full buckets are dropped at once.
func TestRateLimitBounded(t *testing.T) {
	a, _ := limiterAt(t, AuthLimits{UserFailures: 2, ClientFailures: 1000, Window: time.Hour, MaxTracked: 100})
	for i := range 10_000 {
		fail(t, a, loginFrom(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)), fmt.Sprintf("name%d", i))
	}
	if u, c := len(a.users.m), len(a.clients.m); u != 100 || c != 100 || a.users.lru.Len() != 100 {
		t.Errorf("tracked %d usernames and %d clients, want 100 each", u, c)
	}
	// The most recent ones are kept.
	if tm := fail(t, a, loginFrom("192.0.2.1:1"), "name9999"); tm != nil {
		t.Errorf("second failure of a recent name refused: %v", tm)
	}
	if tm := fail(t, a, loginFrom("192.0.2.1:1"), "name9999"); tm == nil {
		t.Error("third failure of a recent name admitted: its bucket was forgotten")
	}
	// Successes leave nothing behind.
	b, _ := limiterAt(t, AuthLimits{UserFailures: 2, ClientFailures: 2, Window: time.Hour})
	for i := range 1000 {
		done, err := b.attempt(loginFrom("192.0.2.1:1"), fmt.Sprintf("ok%d", i))
		if err != nil {
			t.Fatal(err)
		}
		done(false)
	}
	if u, c := len(b.users.m), len(b.clients.m); u != 0 || c != 0 {
		t.Errorf("successful logins left %d usernames and %d clients tracked", u, c)
	}
}

// TestRateLimitClientAddress: X-Forwarded-For counts only from a configured trusted proxy, and
// then only up to the first address that is not one.
func TestRateLimitClientAddress(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32")}
	with := NewAuthLimiter(AuthLimits{ClientFailures: 1, Window: time.Hour, TrustedProxies: trusted})
	without := NewAuthLimiter(AuthLimits{ClientFailures: 1, Window: time.Hour})
	for _, tc := range []struct {
		name          string
		remote        string
		xff           []string
		trusted, none string
	}{
		{"direct", "203.0.113.7:5000", nil, "203.0.113.7", "203.0.113.7"},
		{"spoofed header, untrusted peer", "203.0.113.7:5000", []string{"1.2.3.4"}, "203.0.113.7", "203.0.113.7"},
		{"one proxy", "10.1.1.1:5000", []string{"198.51.100.4"}, "198.51.100.4", "10.1.1.1"},
		{"client's forgery is left of the real hop", "10.1.1.1:5000", []string{"1.2.3.4, 198.51.100.4"}, "198.51.100.4", "10.1.1.1"},
		{"two proxies, two headers", "10.1.1.1:5000", []string{"198.51.100.4", "192.0.2.1"}, "198.51.100.4", "10.1.1.1"},
		{"only proxies", "10.1.1.1:5000", []string{"10.2.2.2"}, "10.2.2.2", "10.1.1.1"},
		{"garbage hop", "10.1.1.1:5000", []string{"198.51.100.4, not-an-ip"}, "10.1.1.1", "10.1.1.1"},
		{"hop with port", "10.1.1.1:5000", []string{"198.51.100.4:7777"}, "198.51.100.4", "10.1.1.1"},
		{"no header from a proxy", "10.1.1.1:5000", nil, "10.1.1.1", "10.1.1.1"},
		{"IPv6 by /64", "[2001:db8:1:2:3:4:5:6]:5000", nil, "2001:db8:1:2::/64", "2001:db8:1:2::/64"},
		{"IPv4-mapped", "[::ffff:203.0.113.9]:5000", nil, "203.0.113.9", "203.0.113.9"},
		{"not an IP", "@unix", nil, "@unix", "@unix"},
	} {
		r := loginFrom(tc.remote, tc.xff...)
		if got := with.client(r); got != tc.trusted {
			t.Errorf("%s, trusted proxies: client %q, want %q", tc.name, got, tc.trusted)
		}
		if got := without.client(r); got != tc.none {
			t.Errorf("%s, no trusted proxies: client %q, want %q", tc.name, got, tc.none)
		}
	}
}

// TestRateLimitOff: limits of 0 limit nothing, and a nil limiter admits everything.
func TestRateLimitOff(t *testing.T) {
	if a := NewAuthLimiter(AuthLimits{Window: time.Hour}); a != nil {
		t.Error("limits of 0 built a limiter")
	}
	var a *AuthLimiter
	for range 100 {
		done, err := a.attempt(loginFrom("192.0.2.1:1"), "alice")
		if err != nil {
			t.Fatal(err)
		}
		done(true)
	}
}
