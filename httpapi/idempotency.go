package httpapi

import (
	"context"
	"net/http"

	"github.com/ledger/ledger/internal/app"
)

// idempotencyKeyHeader makes sendCoin, buy and grant safe to retry: the same key with the same
// request returns the first outcome without running again (see internal/app).
const idempotencyKeyHeader = "Idempotency-Key"

// idempotencyContext returns the context r's command runs in: with r's Idempotency-Key, if it
// sent one, scoped to the authenticated caller. A malformed key, or more than one, is a 400.
func idempotencyContext(r *http.Request) (context.Context, error) {
	keys := r.Header.Values(idempotencyKeyHeader)
	switch len(keys) {
	case 0:
		return r.Context(), nil
	case 1:
	default:
		return nil, errorf(errBadRequest, "send one %s header, not %d", idempotencyKeyHeader, len(keys))
	}
	if err := app.ValidateIdempotencyKey(keys[0]); err != nil {
		return nil, err
	}
	return app.WithIdempotencyKey(r.Context(), claimsOf(r).Username, keys[0]), nil
}
