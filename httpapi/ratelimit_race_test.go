package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/pgtest"
)

// slowPasswords is the fuzz tests' password fake, taking as long as argon2id does per
// computation but without bounding how many run at once, so that the attempts of these tests
// are all in flight together, as they are behind the real hasher's queue.
type slowPasswords struct{ fuzzAuth }

const hashTime = 500 * time.Millisecond

func (p slowPasswords) Hash(ctx context.Context, password string) (string, error) {
	time.Sleep(hashTime)
	return p.fuzzAuth.Hash(ctx, password)
}

func (p slowPasswords) Verify(ctx context.Context, encoded, password string) error {
	time.Sleep(hashTime)
	return p.fuzzAuth.Verify(ctx, encoded, password)
}

type noWake struct{}

func (noWake) C() <-chan struct{} { return nil }

// limitedAPI serves the real handler, with limits l and 127.0.0.1 trusted as a proxy, over the
// real application on a fresh PostgreSQL database, on a real HTTP listener.
func limitedAPI(t *testing.T, l AuthLimits) *httptest.Server {
	t.Helper()
	d := pgtest.New(t, "httpapi_limits")
	l.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	srv := httptest.NewServer(New(Deps{
		Ledger:      app.New(eventstore.New(d.Pool), noWake{}, app.Config{}),
		Passwords:   slowPasswords{},
		Issuer:      fuzzAuth{},
		Verifier:    fuzzTokens{},
		AuthLimiter: NewAuthLimiter(l),
		Log:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}))
	t.Cleanup(srv.Close)
	return srv
}

type authAnswer struct {
	status     int
	msg        string
	retryAfter string
}

// authFrom posts a login of username from client (named in X-Forwarded-For).
func authFrom(t *testing.T, srv *httptest.Server, client, username, password string) authAnswer {
	body, _ := json.Marshal(map[string]string{"username": username, "password": password})
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/auth", bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return authAnswer{}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", client)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Error(err)
		return authAnswer{}
	}
	defer resp.Body.Close()
	var e errorBody
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return authAnswer{status: resp.StatusCode, msg: e.Errors, retryAfter: resp.Header.Get("Retry-After")}
}

// atOnce sends n logins at the same moment and returns their answers.
func atOnce(n int, login func(i int) authAnswer) []authAnswer {
	got := make([]authAnswer, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-gate
			got[i] = login(i)
		})
	}
	close(gate)
	wg.Wait()
	return got
}

func statuses(answers []authAnswer) map[int]int {
	m := map[int]int{}
	for _, a := range answers {
		m[a.status]++
	}
	return m
}

// TestAuthLimitsCountOnlyFailures: logins and sign-ups that succeed cost nothing however many
// run at once: 20 correct logins of one employee, and 150 sign-ups from one address, under the
// default failure limits (10 per username and address, 100 per address).
func TestAuthLimitsCountOnlyFailures(t *testing.T) {
	srv := limitedAPI(t, AuthLimits{UserClientFailures: 10, ClientFailures: 100, Window: 15 * time.Minute,
		UserFailures: 100, UserWindow: 24 * time.Hour})
	const office = "192.0.2.10"
	if a := authFrom(t, srv, office, "alice", "s3cret"); a.status != http.StatusOK {
		t.Fatalf("sign-up: %+v", a)
	}
	if got := statuses(atOnce(20, func(int) authAnswer { return authFrom(t, srv, office, "alice", "s3cret") })); got[http.StatusOK] != 20 {
		t.Errorf("20 correct logins of one employee at once: statuses %v, want 20 × 200", got)
	}
	if got := statuses(atOnce(150, func(i int) authAnswer {
		return authFrom(t, srv, office, "newcomer"+strconv.Itoa(i), "s3cret")
	})); got[http.StatusOK] != 150 {
		t.Errorf("150 sign-ups from one address at once: statuses %v, want 150 × 200", got)
	}
}

// TestAuthLimitsConcurrentGuesses: 60 wrong passwords at once from one address are all checked
// (none had failed when they started), but only the allowance of 5 is answered 401; the others
// answer 429 and tell the guesser nothing about their password.
func TestAuthLimitsConcurrentGuesses(t *testing.T) {
	srv := limitedAPI(t, AuthLimits{UserClientFailures: 5, Window: time.Hour})
	if a := authFrom(t, srv, "198.51.100.1", "alice", "s3cret"); a.status != http.StatusOK {
		t.Fatalf("sign-up: %+v", a)
	}
	answers := atOnce(60, func(i int) authAnswer { return authFrom(t, srv, "203.0.113.7", "alice", "guess"+strconv.Itoa(i)) })
	got := statuses(answers)
	if got[http.StatusUnauthorized] != 5 || got[http.StatusTooManyRequests] != 55 {
		t.Errorf("60 concurrent guesses: statuses %v, want 5 × 401 and 55 × 429", got)
	}
	for _, a := range answers {
		if a.status == http.StatusTooManyRequests && (!strings.HasPrefix(a.msg, "too many failed logins") || a.retryAfter == "") {
			t.Errorf("429 %+v, want a message and Retry-After", a)
		}
	}
	// Alice, elsewhere, is not locked out.
	if a := authFrom(t, srv, "198.51.100.1", "alice", "s3cret"); a.status != http.StatusOK {
		t.Errorf("alice from her own address: %+v", a)
	}
}

// TestAuthLimitsConcurrentSignups: sign-ups are counted when they start, so 30 at once from
// one address create exactly the hour's allowance of 10 accounts.
func TestAuthLimitsConcurrentSignups(t *testing.T) {
	srv := limitedAPI(t, AuthLimits{SignupsPerHour: 10})
	answers := atOnce(30, func(i int) authAnswer { return authFrom(t, srv, "203.0.113.5", "farm"+strconv.Itoa(i), "s3cret") })
	if got := statuses(answers); got[http.StatusOK] != 10 || got[http.StatusTooManyRequests] != 20 {
		t.Errorf("30 sign-ups at once: statuses %v, want 10 × 200 and 20 × 429", got)
	}
	for _, a := range answers {
		if a.status == http.StatusTooManyRequests && (!strings.HasPrefix(a.msg, "too many new accounts from this address; try again in ") || (a.retryAfter != "360" && a.retryAfter != "359")) {
			t.Errorf("429 %+v, want the sign-up message and Retry-After of about 360", a)
		}
	}
	if a := authFrom(t, srv, "192.0.2.10", "farm0", "s3cret"); a.status != http.StatusOK {
		t.Errorf("an account created by the farm, logging in from elsewhere: %+v", a)
	}
}
