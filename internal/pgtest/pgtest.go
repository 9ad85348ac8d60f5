// Package pgtest gives each test package a database of its own on a real PostgreSQL server:
// created with a unique name, migrated, and dropped when the package's tests end, so that test
// runs can share one server. The server is LEDGER_TEST_DATABASE_URL when set, else the local
// one on 127.0.0.1:5432 (make test starts a throwaway cluster when neither answers).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/migrations"
)

// DefaultURL is the server tried when LEDGER_TEST_DATABASE_URL is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL returns the URL of the server tests create their databases on.
func ServerURL() string {
	if u := os.Getenv("LEDGER_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

var nameClean = regexp.MustCompile(`[^a-z0-9_]+`)

// Database is one migrated test database.
type Database struct {
	URL  string
	Name string
	// Pool is connected to the database; closed by Drop.
	Pool *pgxpool.Pool

	server string
	// versions are the projection versions the migrations left serving, which Reset restores.
	names    []string
	versions []int32
}

// Create makes a fresh, migrated database whose name starts with prefix.
func Create(ctx context.Context, prefix string) (*Database, error) {
	server := ServerURL()
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	name := "ledger_test_" + nameClean.ReplaceAllString(strings.ToLower(prefix), "_") + "_" + hex.EncodeToString(rnd[:])
	admin, err := pgx.Connect(ctx, server)
	if err != nil {
		return nil, fmt.Errorf("pgtest: no PostgreSQL at %s (set LEDGER_TEST_DATABASE_URL or run make test, which starts one): %w", server, err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return nil, fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	url := replaceDatabase(server, name)
	db := &Database{URL: url, Name: name, server: server}
	if _, err := migrations.Apply(ctx, url); err != nil {
		db.Drop()
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		db.Drop()
		return nil, err
	}
	pcfg.MaxConns = 16 // packages run in parallel on one shared server
	// The xid fence is server-wide: a transaction a broken test leaves open would stall the
	// readers of every test database. End such a transaction instead.
	pcfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "30000"
	db.Pool, err = pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		db.Drop()
		return nil, err
	}
	if err := db.Pool.QueryRow(ctx, `SELECT COALESCE(array_agg(name), '{}'), COALESCE(array_agg(active_version), '{}')
		FROM projection_versions`).Scan(&db.names, &db.versions); err != nil {
		db.Drop()
		return nil, fmt.Errorf("pgtest: read projection versions: %w", err)
	}
	return db, nil
}

// replaceDatabase swaps the database name of a postgres:// URL (or key=value string).
func replaceDatabase(server, name string) string {
	if strings.HasPrefix(server, "postgres://") || strings.HasPrefix(server, "postgresql://") {
		scheme, rest, _ := strings.Cut(server, "://")
		hostPart, query, hasQuery := strings.Cut(rest, "?")
		host, _, _ := strings.Cut(hostPart, "/")
		u := scheme + "://" + host + "/" + name
		if hasQuery {
			u += "?" + query
		}
		return u
	}
	return server + " dbname=" + name
}

// New is Create for a test: the test fails if the database cannot be made, and the database
// is dropped when the test ends.
func New(tb testing.TB, prefix string) *Database {
	tb.Helper()
	d, err := Create(context.Background(), prefix)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(d.Drop)
	return d
}

// Drop closes the pool and drops the database, whoever is still connected to it.
func (d *Database) Drop() {
	if d.Pool != nil {
		d.Pool.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, d.server)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: drop %s: %v\n", d.Name, err)
		return
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.Name}.Sanitize()+" WITH (FORCE)"); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: drop %s: %v\n", d.Name, err)
	}
}

// Main runs a package's tests against a fresh database kept in *db, and drops it afterwards.
// Use it from TestMain: os.Exit(pgtest.Main(m, "eventstore", &db)).
func Main(m *testing.M, prefix string, db **Database) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	d, err := Create(ctx, prefix)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*db = d
	defer d.Drop()
	return m.Run()
}

// Reset empties every table the tests write to, keeping the schema and seeded reference data;
// every projection is back at the version the migrations left serving.
func (d *Database) Reset(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	var tables []string
	rows, err := d.Pool.Query(ctx, `SELECT quote_ident(tablename) FROM pg_tables
		WHERE schemaname = 'public' AND tablename NOT IN ('schema_version', 'catalog', 'projection_versions')`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) == 0 {
		return
	}
	// TRUNCATE bypasses row triggers; the statement trigger on events guards it, so disable
	// triggers for this session only.
	conn, err := d.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica; TRUNCATE "+strings.Join(tables, ", ")+" RESTART IDENTITY; SET session_replication_role = DEFAULT"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE projection_versions v SET active_version = m.version
		FROM unnest($1::text[], $2::int[]) AS m(name, version) WHERE v.name = m.name`, d.names, d.versions); err != nil {
		t.Fatal(err)
	}
}
