package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
)

// queuedHasher hashes one password at a time, taking a while each, and waits for its turn only
// as long as the caller's context lets it, as the real hasher does.
type queuedHasher struct {
	fuzzAuth
	turn chan struct{}
	took time.Duration
}

func (h *queuedHasher) Hash(ctx context.Context, password string) (string, error) {
	select {
	case h.turn <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for hash worker: %w", ctx.Err())
	}
	defer func() { <-h.turn }()
	time.Sleep(h.took)
	return fuzzHashPrefix + password, nil
}

// signUpLedger knows nobody, and opens accounts at once, recording how long each opening was
// still allowed to wait on the database.
type signUpLedger struct {
	Ledger
	mu   sync.Mutex
	left []time.Duration
}

func (l *signUpLedger) LookupIdentity(context.Context, string) (app.Identity, error) {
	return app.Identity{}, domain.ErrUnknownAccount
}

func (l *signUpLedger) OpenAccount(ctx context.Context, _, _ string) (uuid.UUID, app.Result, error) {
	d, ok := ctx.Deadline()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok {
		l.left = append(l.left, -1)
	} else {
		l.left = append(l.left, time.Until(d))
	}
	return uuid.New(), app.Result{}, ctx.Err()
}

// The request's deadline is for its database work: sign-ups that queue for the password hasher
// far longer than the deadline all succeed, and the database work after the hash is still
// bounded by the deadline's length.
func TestPasswordWorkIsOffTheDatabaseDeadline(t *testing.T) {
	const timeout = 100 * time.Millisecond
	l := &signUpLedger{}
	srv := httptest.NewServer(New(Deps{
		Ledger:         l,
		Passwords:      &queuedHasher{turn: make(chan struct{}, 1), took: 150 * time.Millisecond},
		Issuer:         fuzzAuth{},
		Verifier:       fuzzTokens{},
		Log:            slog.New(slog.DiscardHandler),
		RequestTimeout: timeout,
	}))
	defer srv.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"username":"burst-%d","password":"secret"}`, i)
			resp, err := http.Post(srv.URL+"/api/auth", "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("sign-up %d behind others' hashes: %s, want 200", i, resp.Status)
			}
		})
	}
	wg.Wait()
	for _, left := range l.left {
		if left < 0 || left > timeout {
			t.Errorf("an account was opened with %v left to wait on the database, want a deadline within %v", left, timeout)
		}
	}
}
