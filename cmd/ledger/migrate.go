package main

import (
	"context"
	"fmt"
	"io"

	"github.com/ledger/ledger/migrations"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", stderr)
	dbURL := databaseURLFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dbURL == "" {
		return fmt.Errorf("no database: set APP_POSTGRES_URL (or LEDGER_DATABASE_URL) or pass --database-url")
	}
	v, err := migrations.Apply(ctx, *dbURL)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "database migrated to version %d\n", v)
	return nil
}
