package projections

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/ledger/ledger/eventstore"
)

// Active is the version of each projection that serves reads, by name.
type Active map[string]int

// ActiveVersions reads projection_versions through q.
func ActiveVersions(ctx context.Context, q eventstore.Querier) (Active, error) {
	rows, err := q.Query(ctx, `SELECT name, active_version FROM projection_versions`)
	if err != nil {
		return nil, fmt.Errorf("projections: read projection versions: %w", err)
	}
	active := Active{}
	var name string
	var v int
	if _, err := pgx.ForEachRow(rows, []any{&name, &v}, func() error { active[name] = v; return nil }); err != nil {
		return nil, fmt.Errorf("projections: read projection versions: %w", err)
	}
	return active, nil
}

// Of returns the named projection's active version; one the table does not name serves
// version 1.
func (a Active) Of(name string) int {
	if v, ok := a[name]; ok {
		return v
	}
	return 1
}

// Serving returns the named projection at its active version.
func (a Active) Serving(name string) (Projection, error) {
	p, ok := Lookup(name, a.Of(name))
	if !ok {
		return Projection{}, fmt.Errorf("projections: %s v%d serves reads but this build does not know it", name, a.Of(name))
	}
	return p, nil
}

// Served returns the versions of balance, inventory and history that serve reads.
func (a Active) Served() (balance, inventory, history Projection, err error) {
	if balance, err = a.Serving("balance"); err != nil {
		return
	}
	if inventory, err = a.Serving("inventory"); err != nil {
		return
	}
	history, err = a.Serving("history")
	return
}
