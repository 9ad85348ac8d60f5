package seed

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/pgtest"
)

var db *pgtest.Database

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, "seed", &db)) }

func TestUsername(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		i, n   int
		want   string
	}{
		{"user", 0, 9, "user1"},
		{"user", 0, 10, "user01"},
		{"user", 9, 10, "user10"},
		{"load", 41, 10_000, "load00042"},
		{"", 0, 1, "1"},
	} {
		if got := Username(tc.prefix, tc.i, tc.n); got != tc.want {
			t.Errorf("Username(%q, %d, %d) = %q, want %q", tc.prefix, tc.i, tc.n, got, tc.want)
		}
	}
}

func TestRunRefusesBadOptions(t *testing.T) {
	good := Options{DatabaseURL: "postgres://unused", Users: 3, Prefix: "u", Workers: 2, Issuer: newIssuer(t, nil)}
	for name, change := range map[string]func(*Options){
		"no database": func(o *Options) { o.DatabaseURL = "" },
		"no users":    func(o *Options) { o.Users = 0 },
		"no workers":  func(o *Options) { o.Workers = -1 },
		"no issuer":   func(o *Options) { o.Issuer = nil },
		"bad prefix":  func(o *Options) { o.Prefix = " padded" },
	} {
		t.Run(name, func(t *testing.T) {
			o := good
			change(&o)
			if _, _, err := Run(context.Background(), o); err == nil || !strings.HasPrefix(err.Error(), "seed: ") {
				t.Fatalf("Run = %v, want a seed: error", err)
			}
		})
	}
}

// TestRunOpensAccountsOnceAndMintsTokens seeds, then seeds again: the second run adds no
// events and still returns a valid token for every employee, in order.
func TestRunOpensAccountsOnceAndMintsTokens(t *testing.T) {
	ctx := context.Background()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	verifier := auth.NewVerifier(pub, "test-issuer", "test-audience", 16)
	opts := Options{DatabaseURL: db.URL, Users: 12, Prefix: "seedtest", Workers: 4, Issuer: newIssuer(t, priv)}

	users, tokens, err := Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	check := func(users []User, tokens []string) {
		t.Helper()
		if len(users) != opts.Users || len(tokens) != opts.Users {
			t.Fatalf("got %d users and %d tokens, want %d each", len(users), len(tokens), opts.Users)
		}
		for i, u := range users {
			if want := Username(opts.Prefix, i, opts.Users); u.Username != want || u.Password != Password {
				t.Fatalf("user %d = %+v, want %s with the seed password", i, u, want)
			}
			claims, err := verifier.Verify(tokens[i])
			if err != nil {
				t.Fatalf("token %d: %v", i, err)
			}
			if claims.Username != u.Username || claims.Roles != 0 {
				t.Fatalf("token %d is for %+v, want %s without admin", i, claims, u.Username)
			}
		}
	}
	check(users, tokens)
	var accounts, events, coins int64
	count := func() {
		t.Helper()
		err := db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM users WHERE username LIKE 'seedtest%'),
			(SELECT count(*) FROM events), (SELECT coalesce(sum((convert_from(payload_bytes, 'UTF8')::jsonb->>'amount')::bigint), 0) FROM events WHERE event_type = 'CoinsGranted')`).
			Scan(&accounts, &events, &coins)
		if err != nil {
			t.Fatal(err)
		}
	}
	count()
	if accounts != 12 || coins != 12*1000 {
		t.Fatalf("after seeding: %d employees holding %d granted coins, want 12 and 12000", accounts, coins)
	}
	before := events

	users, tokens, err = Run(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	check(users, tokens)
	count()
	if accounts != 12 || events != before {
		t.Fatalf("seeding again: %d employees and %d events, want 12 and the %d there were", accounts, events, before)
	}

	dir := t.TempDir()
	up, tp := filepath.Join(dir, "out", "users.json"), filepath.Join(dir, "out", "tokens.json")
	if err := WriteJSONFile(up, users); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSONFile(tp, tokens); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(tp)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("tokens file mode %v, want owner-only", fi.Mode().Perm())
	}
	ru, rt, err := ReadFiles(up, tp)
	if err != nil {
		t.Fatal(err)
	}
	check(ru, rt)
	if err := WriteJSONFile(tp, tokens[:3]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadFiles(up, tp); err == nil {
		t.Fatal("ReadFiles accepted 12 users with 3 tokens")
	}
}

func newIssuer(t *testing.T, priv ed25519.PrivateKey) *auth.Issuer {
	t.Helper()
	if priv == nil {
		var err error
		if _, priv, err = ed25519.GenerateKey(rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	return auth.NewIssuer(priv, "test-issuer", "test-audience", time.Hour)
}
