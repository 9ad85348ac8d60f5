package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
)

// authFrom logs in as if from client (sent in X-Forwarded-For; "" sends none).
func authFrom(t testing.TB, api *apiClient, client, username, password string) response {
	t.Helper()
	req := api.newRequest(t, http.MethodPost, "/api/auth", "", map[string]string{"username": username, "password": password})
	if client != "" {
		req.Header.Set("X-Forwarded-For", client)
	}
	return api.send(t, req)
}

// wantTooMany asserts a 429 with a Retry-After in whole seconds and a message that starts with
// want and says when to try again.
func wantTooMany(t *testing.T, r response, want string) {
	t.Helper()
	wantStatus(t, r, http.StatusTooManyRequests, want+"; try again in ")
	if msg := r.errMsg(); !strings.HasPrefix(msg, want+";") {
		t.Errorf("message %q, want it to start with %q", msg, want)
	}
	if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Errorf("Retry-After %q, want whole seconds of at least 1: %s", r.Header.Get("Retry-After"), r)
	}
}

// startLimitedService is startTestService with the given login limits, windows long enough that
// nothing comes back while a test runs, and 127.0.0.1 trusted as a proxy, so X-Forwarded-For
// names each test client.
func startLimitedService(t *testing.T, userClient, client, user, signups int) *apiClient {
	t.Helper()
	return startTestService(t, func(c *serveConfig) {
		c.AuthUserClientFailures, c.AuthClientFailures, c.AuthFailureWindow = userClient, client, time.Hour
		c.AuthUserFailures, c.AuthUserFailureWindow = user, 24*time.Hour
		c.SignupsPerHour = signups
		c.TrustedProxies = "127.0.0.1"
	}).api
}

// TestE2ELoginLimitsNoLockoutFromElsewhere: an attacker failing on alice's username from one
// address is stopped there, and alice still logs in from her own; a guesser spread over many
// addresses is stopped by the per-username ceiling. (Concurrent attempts: ratelimit_race_test.go
// in httpapi.)
func TestE2ELoginLimitsNoLockoutFromElsewhere(t *testing.T) {
	api := startLimitedService(t, 3, 100, 8, 0)
	const home, attacker = "198.51.100.1", "203.0.113.66"
	alice, bob := uniq("alice"), uniq("bob")
	wantStatus(t, authFrom(t, api, home, alice, testPassword), http.StatusOK)
	wantStatus(t, authFrom(t, api, home, bob, testPassword), http.StatusOK)

	for i := range 3 {
		wantStatus(t, authFrom(t, api, attacker, alice, "guess"+strconv.Itoa(i)), http.StatusUnauthorized)
	}
	wantTooMany(t, authFrom(t, api, attacker, alice, "guess3"), "too many failed logins for this username from this address")
	// The right password from the attacker's address is refused too: a guesser learns nothing.
	wantTooMany(t, authFrom(t, api, attacker, alice, testPassword), "too many failed logins for this username from this address")
	// Alice, from her own address, is not locked out; nor is bob from the attacker's.
	wantStatus(t, authFrom(t, api, home, alice, testPassword), http.StatusOK)
	wantStatus(t, authFrom(t, api, attacker, bob, testPassword), http.StatusOK)

	// A guesser with many addresses, each under its allowance: 5 more failures reach the
	// ceiling of 8, under which alice still logs in.
	for i := range 5 {
		wantStatus(t, authFrom(t, api, fmt.Sprintf("203.0.113.%d", i+1), alice, "spread"+strconv.Itoa(i)), http.StatusUnauthorized)
		if i < 4 {
			wantStatus(t, authFrom(t, api, home, alice, testPassword), http.StatusOK)
		}
	}
	wantTooMany(t, authFrom(t, api, "203.0.113.99", alice, "spread5"), "too many failed logins for this username")
	// The ceiling's price: it holds for alice too, until it refills (the README's trade-off).
	wantTooMany(t, authFrom(t, api, home, alice, testPassword), "too many failed logins for this username")
	wantStatus(t, authFrom(t, api, home, bob, testPassword), http.StatusOK)
}

// TestE2ELoginLimitsPerClient: failures from one client across usernames are limited; the
// office and the sprayed usernames are unaffected.
func TestE2ELoginLimitsPerClient(t *testing.T) {
	api := startLimitedService(t, 3, 5, 100, 0)
	const attacker, office = "192.0.2.66", "192.0.2.10"
	users := make([]string, 7)
	for i := range users {
		users[i] = uniq("staff")
		wantStatus(t, authFrom(t, api, office, users[i], testPassword), http.StatusOK)
	}
	for i := range 5 {
		wantStatus(t, authFrom(t, api, attacker, users[i], "spray"), http.StatusUnauthorized)
	}
	wantTooMany(t, authFrom(t, api, attacker, users[5], "spray"), "too many failed logins from this address")
	wantTooMany(t, authFrom(t, api, attacker, users[6], testPassword), "too many failed logins from this address")
	for _, u := range users {
		wantStatus(t, authFrom(t, api, office, u, testPassword), http.StatusOK)
	}
}

// TestE2ELoginLimitsUntrustedForwardedFor: without a trusted proxy, X-Forwarded-For is the
// client's own claim and is ignored, so changing it does not escape the per-client limit.
func TestE2ELoginLimitsUntrustedForwardedFor(t *testing.T) {
	api := startTestService(t, func(c *serveConfig) {
		c.AuthClientFailures, c.AuthFailureWindow = 2, time.Hour
	}).api
	users := []string{uniq("u"), uniq("u"), uniq("u")}
	for _, u := range users {
		wantStatus(t, authFrom(t, api, "", u, testPassword), http.StatusOK)
	}
	for i := range 2 {
		wantStatus(t, authFrom(t, api, fmt.Sprintf("203.0.113.%d", i+1), users[i], "wrong"), http.StatusUnauthorized)
	}
	wantTooMany(t, authFrom(t, api, "203.0.113.99", users[2], "wrong"), "too many failed logins from this address")
}

// TestE2ESignupLimit: one address creates at most APP_SIGNUPS_PER_HOUR accounts an hour, each
// worth the welcome allowance; its employees still log in, and other addresses still sign up.
func TestE2ESignupLimit(t *testing.T) {
	api := startLimitedService(t, 10, 100, 100, 3)
	const farm, office = "203.0.113.5", "192.0.2.10"
	names := []string{uniq("farm"), uniq("farm"), uniq("farm")}
	for _, n := range names {
		wantStatus(t, authFrom(t, api, farm, n, testPassword), http.StatusOK)
	}
	extra := uniq("farm")
	r := authFrom(t, api, farm, extra, testPassword)
	wantTooMany(t, r, "too many new accounts from this address")
	if n, _ := strconv.Atoi(r.Header.Get("Retry-After")); n < 1000 || n > 1200 {
		t.Errorf("Retry-After %q, want about 1200 (an account back every 20 minutes)", r.Header.Get("Retry-After"))
	}
	// The refused name was not created: it signs up from elsewhere, with another password.
	wantStatus(t, authFrom(t, api, office, extra, "another password"), http.StatusOK)
	// Existing employees log in from the farm's address as often as they like.
	for range 5 {
		for _, n := range names {
			wantStatus(t, authFrom(t, api, farm, n, testPassword), http.StatusOK)
		}
	}
}

// TestE2EUsernameLookalikes: a new name that looks like another (a Cyrillic а, a right-to-left
// override, a zero-width space) is refused with 400; a name in another Unicode normal form is
// the same employee, for login, sendCoin and grant; accounts stored before the rules keep
// working.
func TestE2EUsernameLookalikes(t *testing.T) {
	ts := startTestService(t)
	api := ts.api
	suffix := uniq("")
	alice := "alice" + suffix
	ta := api.login(t, alice)
	for _, tc := range []struct{ name, want string }{
		{"\u0430lice" + suffix, "mixes letters of the Cyrillic and Latin scripts"},
		{"adm\u202ein" + suffix, "U+202E RIGHT-TO-LEFT OVERRIDE is not allowed"},
		{"ali\u200bce" + suffix, "U+200B ZERO WIDTH SPACE is not allowed"},
		{"fox🦊" + suffix, "U+1F98A FOX FACE is not allowed"},
	} {
		wantStatus(t, api.auth(t, tc.name, testPassword), http.StatusBadRequest, "invalid username", tc.want)
		wantStatus(t, api.sendCoin(t, ta, tc.name, 1), http.StatusBadRequest)
	}

	nfc, nfd := "jos\u00e9"+suffix, "jose\u0301"+suffix
	// Signed up as NFD, stored as NFC: both forms are one employee with one password.
	tj := api.login(t, nfd)
	wantStatus(t, api.auth(t, nfc, "not the password"), http.StatusUnauthorized)
	if in := api.info(t, api.login(t, nfc)); in.Coins != 1000 {
		t.Fatalf("josé by NFC: %s, want the account signed up by NFD", in)
	}
	full := "\uff4a\uff4f\uff53\u00e9" + suffix // full-width "jos" and é
	if in := api.info(t, api.login(t, full)); in.Coins != 1000 {
		t.Errorf("josé in full-width: %s", in)
	}
	// sendCoin and grant to either form reach the one account.
	wantOK(t, api.sendCoin(t, ta, nfd, 10))
	wantOK(t, api.sendCoin(t, ta, nfc, 5))
	wantStatus(t, api.sendCoin(t, tj, nfd, 1), http.StatusBadRequest, "yourself")
	admin := api.login(t, "admin")
	wantOK(t, api.grant(t, admin, map[string]any{"toUser": nfd, "amount": 100, "reason": "NFD"}))
	in := api.info(t, tj)
	if in.Coins != 1115 || len(in.CoinHistory.Received) != 2 || in.CoinHistory.Received[0].FromUser != alice {
		t.Errorf("josé: %s, want 1000 + 10 + 5 + 100 coins, received twice from alice", in)
	}
	for _, s := range api.info(t, ta).CoinHistory.Sent {
		if s.ToUser != nfc {
			t.Errorf("alice's sent history names %+q, want %+q (NFC)", s.ToUser, nfc)
		}
	}

	// An account stored before the rules, under a name they refuse, still logs in and receives.
	legacy := "\u0430dmin" + suffix
	hash, err := auth.NewHasher(1).Hash(context.Background(), testPassword)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := app.New(eventstore.New(ts.svc.pool), noWaker{}, app.Config{}).OpenAccount(context.Background(), legacy, hash); err != nil {
		t.Fatalf("open the legacy account: %v", err)
	}
	tl := api.login(t, legacy)
	wantStatus(t, api.auth(t, legacy, "not the password"), http.StatusUnauthorized)
	wantOK(t, api.sendCoin(t, ta, legacy, 7))
	if in := api.info(t, tl); in.Coins != 1007 {
		t.Errorf("legacy account: %s, want 1007 coins", in)
	}
}

// noWaker is an application without a projector to wake.
type noWaker struct{}

func (noWaker) C() <-chan struct{} { return nil }
