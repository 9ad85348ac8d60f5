package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledger/ledger/domain"
)

// A database that cannot be reached is a 503 the client may retry, not an internal error.
func TestStatusOfAnUnreachableDatabase(t *testing.T) {
	_, connectErr := pgconn.Connect(context.Background(), "postgres://postgres@127.0.0.1:1/none?connect_timeout=2")
	if connectErr == nil {
		t.Skip("something listens on port 1")
	}
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"connect refused", fmt.Errorf("load account: %w", connectErr), http.StatusServiceUnavailable},
		{"server shutting down", &pgconn.PgError{Code: "57P01"}, http.StatusServiceUnavailable},
		{"connection exception", &pgconn.PgError{Code: "08006"}, http.StatusServiceUnavailable},
		{"constraint", &pgconn.PgError{Code: "23505"}, http.StatusInternalServerError},
		{"domain refusal", domain.ErrInsufficientFunds, http.StatusBadRequest},
		{"anything else", errors.New("boom"), http.StatusInternalServerError},
	} {
		if got, _ := status(tc.err); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A request that ran out of its deadline is a 503 the client may retry; one whose client went
// away is recorded as 499, never as a 500, even when what failed only shows it indirectly.
func TestStatusOfAnEndedRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"deadline in a statement", fmt.Errorf("look up %q: %w", "alice", fmt.Errorf("timeout: %w", context.DeadlineExceeded)), http.StatusServiceUnavailable},
		{"deadline waiting for the hasher", fmt.Errorf("auth: waiting for hash worker: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{"client gone", fmt.Errorf("read info: %w", context.Canceled), statusClientClosedRequest},
	} {
		if got, _ := status(tc.err); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
	s := New(Deps{Log: slog.New(slog.DiscardHandler)})
	for _, tc := range []struct {
		name string
		end  func(context.Context) (context.Context, context.CancelFunc)
		want int
	}{
		{"past the deadline", func(ctx context.Context) (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 0) }, http.StatusServiceUnavailable},
		{"client gone", context.WithCancel, statusClientClosedRequest},
	} {
		ctx, cancel := tc.end(context.Background())
		cancel()
		rec := httptest.NewRecorder()
		s.writeError(rec, httptest.NewRequest(http.MethodGet, "/api/info", nil).WithContext(ctx), errors.New("conn closed"))
		if rec.Code != tc.want {
			t.Errorf("%s, then a connection error: %d, want %d", tc.name, rec.Code, tc.want)
		}
	}
}
