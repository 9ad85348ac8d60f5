package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a limiter's time, moved by the test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

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

// asRefusal returns err as a *tooManyAttempts (nil for nil), failing the test for anything else.
func asRefusal(t *testing.T, err error) *tooManyAttempts {
	t.Helper()
	if err == nil {
		return nil
	}
	var tm *tooManyAttempts
	if !errors.As(err, &tm) || !errors.Is(err, errTooManyRequests) {
		t.Fatalf("refusal is %T %v, want *tooManyAttempts", err, err)
	}
	return tm
}

// fail makes one failed login, one after the other as a client would, and returns its
// refusal: before the password is checked, or instead of the failure.
func fail(t *testing.T, a *AuthLimiter, r *http.Request, user string) *tooManyAttempts {
	t.Helper()
	at := a.attempt(r, user)
	if err := at.admit(); err != nil {
		return asRefusal(t, err)
	}
	return asRefusal(t, at.failed())
}

// succeed makes one successful login and returns its refusal.
func succeed(t *testing.T, a *AuthLimiter, r *http.Request, user string) *tooManyAttempts {
	t.Helper()
	at := a.attempt(r, user)
	if err := at.admit(); err != nil {
		return asRefusal(t, err)
	}
	return asRefusal(t, at.admit())
}

// TestRateLimitPerUsernameAndClient: failures for one username from one address are allowed in
// a burst, then refused with a wait that shrinks as time passes; the same username from another
// address, and another username from the same address, are unaffected; successes cost nothing.
func TestRateLimitPerUsernameAndClient(t *testing.T) {
	a, clock := limiterAt(t, AuthLimits{UserClientFailures: 3, Window: 3 * time.Minute})
	attacker, home := loginFrom("203.0.113.7:1000"), loginFrom("198.51.100.1:1000")
	for i := range 10 {
		if tm := succeed(t, a, home, "alice"); tm != nil {
			t.Fatalf("success %d refused: %v", i, tm)
		}
	}
	for i := range 3 {
		if tm := fail(t, a, attacker, "alice"); tm != nil {
			t.Fatalf("failure %d refused: %v", i+1, tm)
		}
	}
	tm := fail(t, a, attacker, "alice")
	if tm == nil {
		t.Fatal("a fourth failure within the window was admitted")
	}
	if got := tm.retryAfterSeconds(); got != 60 {
		t.Errorf("Retry-After %d, want 60 (one attempt back per minute)", got)
	}
	if want := "too many failed logins for this username from this address; try again in 60 seconds"; tm.Error() != want {
		t.Errorf("message %q, want %q", tm.Error(), want)
	}
	// The right password from the attacker's address is refused too, or the limit would not
	// stop a guesser.
	if tm := succeed(t, a, attacker, "alice"); tm == nil {
		t.Error("an attempt for a username out of attempts from this address was admitted")
	}
	// Alice at home, and bob at the attacker's address, are not.
	if tm := succeed(t, a, home, "alice"); tm != nil {
		t.Errorf("alice from her own address was refused: %v", tm)
	}
	if tm := fail(t, a, attacker, "bob"); tm != nil {
		t.Errorf("another username from the address was refused: %v", tm)
	}
	clock.add(20 * time.Second)
	if tm := fail(t, a, attacker, "alice"); tm == nil || tm.retryAfterSeconds() != 40 {
		t.Errorf("after 20s: %v, want a refusal with Retry-After 40", tm)
	}
	clock.add(40 * time.Second)
	if tm := fail(t, a, attacker, "alice"); tm != nil {
		t.Errorf("after the minute: %v, want one attempt admitted", tm)
	}
	if tm := fail(t, a, attacker, "alice"); tm == nil {
		t.Error("a second attempt after one minute was admitted")
	}
}

// TestRateLimitPerClient: failures from one client across usernames are limited; other
// clients are not.
func TestRateLimitPerClient(t *testing.T) {
	a, _ := limiterAt(t, AuthLimits{UserClientFailures: 3, ClientFailures: 4, Window: time.Hour})
	sprayer := loginFrom("203.0.113.7:4000")
	for i := range 4 {
		if tm := fail(t, a, sprayer, fmt.Sprintf("user%d", i)); tm != nil {
			t.Fatalf("failure %d refused: %v", i+1, tm)
		}
	}
	tm := fail(t, a, loginFrom("203.0.113.7:4001"), "victim")
	if tm == nil || !strings.HasPrefix(tm.Error(), "too many failed logins from this address;") {
		t.Fatalf("fifth failure from one client: %v, want refused from this address", tm)
	}
	if got := tm.retryAfterSeconds(); got != 900 {
		t.Errorf("Retry-After %d, want 900 (4 attempts an hour)", got)
	}
	if tm := fail(t, a, loginFrom("198.51.100.1:4000"), "victim"); tm != nil {
		t.Errorf("victim from another client refused: %v", tm)
	}
}

// TestRateLimitUsernameCeiling: a guesser spread over many addresses, each under its own
// allowance, is stopped by the per-username ceiling, which then refuses everyone; until then,
// the victim logs in.
func TestRateLimitUsernameCeiling(t *testing.T) {
	a, clock := limiterAt(t, AuthLimits{UserClientFailures: 3, ClientFailures: 10, Window: 15 * time.Minute,
		UserFailures: 12, UserWindow: 24 * time.Hour})
	home := loginFrom("198.51.100.1:1000")
	for i := range 12 {
		if tm := fail(t, a, loginFrom(fmt.Sprintf("203.0.113.%d:1000", i/2+1)), "alice"); tm != nil {
			t.Fatalf("failure %d (two per address) refused: %v", i+1, tm)
		}
		if tm := succeed(t, a, home, "alice"); tm != nil && i < 11 {
			t.Fatalf("alice at home after %d failures elsewhere refused: %v", i+1, tm)
		}
	}
	tm := fail(t, a, loginFrom("203.0.113.99:1000"), "alice")
	if tm == nil || !strings.HasPrefix(tm.Error(), "too many failed logins for this username;") {
		t.Fatalf("a fresh address after the ceiling: %v, want refused for this username", tm)
	}
	if got := tm.retryAfterSeconds(); got != 7200 {
		t.Errorf("Retry-After %d, want 7200 (12 attempts a day)", got)
	}
	if tm := succeed(t, a, home, "alice"); tm == nil {
		t.Error("the ceiling spent, alice at home was admitted: the ceiling does not hold")
	}
	if tm := succeed(t, a, home, "bob"); tm != nil {
		t.Errorf("bob refused: %v", tm)
	}
	clock.add(2 * time.Hour)
	if tm := succeed(t, a, home, "alice"); tm != nil {
		t.Errorf("two hours later, alice refused: %v", tm)
	}
}

// TestRateLimitConcurrentGuesses: attempts that run at once are all admitted before any has
// failed, but only as many failures as the allowance answers as failures; the rest, and a right
// password among them once the allowance is gone, answer 429 and tell the guesser nothing.
func TestRateLimitConcurrentGuesses(t *testing.T) {
	a, _ := limiterAt(t, AuthLimits{UserClientFailures: 10, Window: time.Hour})
	r := loginFrom("203.0.113.7:1000")
	const n = 200
	attempts := make([]loginAttempt, n)
	for i := range attempts {
		attempts[i] = a.attempt(r, "alice")
		if err := attempts[i].admit(); err != nil {
			t.Fatalf("attempt %d refused before any failure: %v", i, err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	answered := 0
	for _, at := range attempts {
		wg.Go(func() {
			if err := at.failed(); err == nil {
				mu.Lock()
				answered++
				mu.Unlock()
			} else {
				asRefusal(t, err)
			}
		})
	}
	wg.Wait()
	if answered != 10 {
		t.Errorf("%d of %d concurrent failures answered as failures, want the allowance: 10", answered, n)
	}
	if err := attempts[0].admit(); err == nil {
		t.Error("a right password after the allowance was spent was answered as right")
	}
}

// TestRateLimitSignups: new accounts per client address an hour.
func TestRateLimitSignups(t *testing.T) {
	a, clock := limiterAt(t, AuthLimits{SignupsPerHour: 3})
	office, other := loginFrom("192.0.2.10:1000"), loginFrom("192.0.2.11:1000")
	for i := range 3 {
		if err := a.attempt(office, fmt.Sprintf("new%d", i)).signup(); err != nil {
			t.Fatalf("sign-up %d refused: %v", i+1, err)
		}
	}
	tm := asRefusal(t, a.attempt(office, "new3").signup())
	if tm == nil {
		t.Fatal("a fourth sign-up within the hour was admitted")
	}
	if want := "too many new accounts from this address; try again in 1200 seconds"; tm.Error() != want {
		t.Errorf("message %q, want %q", tm.Error(), want)
	}
	if err := a.attempt(other, "new3").signup(); err != nil {
		t.Errorf("another address refused: %v", err)
	}
	// Logins are not sign-ups.
	if tm := succeed(t, a, office, "new0"); tm != nil {
		t.Errorf("a login from the address refused: %v", tm)
	}
	clock.add(20 * time.Minute)
	if err := a.attempt(office, "new3").signup(); err != nil {
		t.Errorf("20 minutes later: %v", err)
	}
}

// TestRateLimitBounded: however many names are tried, each allowance remembers at most
// MaxTracked keys, the most recent ones; successes leave nothing behind.
func TestRateLimitBounded(t *testing.T) {
	a, _ := limiterAt(t, AuthLimits{UserClientFailures: 2, ClientFailures: 1000, Window: time.Hour,
		UserFailures: 2, UserWindow: time.Hour, MaxTracked: 100})
	for i := range 10_000 {
		fail(t, a, loginFrom(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)), fmt.Sprintf("name%d", i))
	}
	for _, al := range []*allowance{a.userClient, a.client, a.user} {
		if n := al.keys.Len(); n != 100 {
			t.Errorf("%q tracks %d keys, want 100", al.msg, n)
		}
	}
	if tm := fail(t, a, loginFrom("10.0.39.15:1"), "name9999"); tm != nil {
		t.Errorf("second failure of a recent name refused: %v", tm)
	}
	if tm := fail(t, a, loginFrom("10.0.39.15:1"), "name9999"); tm == nil {
		t.Error("third failure of a recent name admitted: its bucket was forgotten")
	}
	b, _ := limiterAt(t, AuthLimits{UserClientFailures: 2, ClientFailures: 2, Window: time.Hour, UserFailures: 2, UserWindow: time.Hour})
	for i := range 1000 {
		if tm := succeed(t, b, loginFrom("192.0.2.1:1"), fmt.Sprintf("ok%d", i)); tm != nil {
			t.Fatal(tm)
		}
	}
	for _, al := range []*allowance{b.userClient, b.client, b.user} {
		if n := al.keys.Len(); n != 0 {
			t.Errorf("successful logins left %d keys in %q", n, al.msg)
		}
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
		if got := with.clientOf(r); got != tc.trusted {
			t.Errorf("%s, trusted proxies: client %q, want %q", tc.name, got, tc.trusted)
		}
		if got := without.clientOf(r); got != tc.none {
			t.Errorf("%s, no trusted proxies: client %q, want %q", tc.name, got, tc.none)
		}
	}
}

// TestRateLimitOff: limits of 0 limit nothing, and a nil limiter admits everything.
func TestRateLimitOff(t *testing.T) {
	if a := NewAuthLimiter(AuthLimits{Window: time.Hour, UserWindow: time.Hour}); a != nil {
		t.Error("limits of 0 built a limiter")
	}
	var a *AuthLimiter
	for range 100 {
		at := a.attempt(loginFrom("192.0.2.1:1"), "alice")
		if err := errors.Join(at.admit(), at.failed(), at.signup()); err != nil {
			t.Fatal(err)
		}
	}
}
