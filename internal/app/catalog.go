package app

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
)

// catalogCache keeps the price list for CatalogTTL. A price change reaches purchases within that
// time; the price actually paid is recorded in each purchase event either way.
type catalogCache struct {
	// lock is held by whoever reads or refreshes the cache; a channel, so that a caller
	// waiting for a refresh that hangs can leave when its context ends.
	lock    chan struct{}
	items   domain.Catalog
	fetched time.Time
}

// Catalog returns the current price list.
func (a *App) Catalog(ctx context.Context) (domain.Catalog, error) {
	c := &a.catalog
	select {
	case c.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("read catalog: %w", ctx.Err())
	}
	defer func() { <-c.lock }()
	if c.items != nil && time.Since(c.fetched) < a.cfg.CatalogTTL {
		return c.items, nil
	}
	rows, err := a.pool.Query(ctx, `SELECT item, price FROM catalog`)
	if err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	items := domain.Catalog{}
	var item string
	var price int64
	if _, err := pgx.ForEachRow(rows, []any{&item, &price}, func() error {
		items[item] = domain.Coins(price)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read catalog: %w", err)
	}
	c.items, c.fetched = items, time.Now()
	return items, nil
}
