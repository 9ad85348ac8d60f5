package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
