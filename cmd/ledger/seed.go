package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/migrations"
)

// seedPassword is every seeded employee's password: one hash serves them all.
const seedPassword = "load-test-password"

// runSeed creates employees in bulk through the ordinary open-account command (so each gets
// its events and welcome allowance), and writes the load tool's two files.
func runSeed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	fs := newFlagSet("seed", stderr)
	cfg.bind(fs)
	n := fs.Int("users", 10_000, "number of employees")
	prefix := fs.String("prefix", "user", "username prefix; names are PREFIX00001…")
	usersOut := fs.String("out-users", "", "write [{username, password}] here (required)")
	tokensOut := fs.String("out-tokens", "", "write the matching tokens here (required)")
	workers := fs.Int("workers", 16, "concurrent account openings")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n <= 0 || *usersOut == "" || *tokensOut == "" || cfg.DatabaseURL == "" || *workers <= 0 {
		fmt.Fprintln(stderr, "ledger seed: need --users > 0, --out-users, --out-tokens and a database (APP_POSTGRES_URL or --database-url)")
		return errUsage
	}
	start := time.Now()
	users, tokens, err := seed(ctx, cfg, *n, *prefix, *workers)
	if err != nil {
		return err
	}
	if err := writeJSONFile(*usersOut, users); err != nil {
		return err
	}
	if err := writeJSONFile(*tokensOut, tokens); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "seeded %d employees in %s; users in %s, tokens in %s\n", *n, time.Since(start).Round(time.Millisecond), *usersOut, *tokensOut)
	return nil
}

type seedUser struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func seed(ctx context.Context, cfg serveConfig, n int, prefix string, workers int) ([]seedUser, []string, error) {
	if _, err := migrations.Apply(ctx, cfg.DatabaseURL); err != nil {
		return nil, nil, err
	}
	priv, _, err := auth.LoadOrCreateKeys(cfg.SigningKeyFile, cfg.VerificationKeyFile)
	if err != nil {
		return nil, nil, err
	}
	issuer := auth.NewIssuer(priv, tokenIssuer, tokenAudience, cfg.TokenTTL)
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, err
	}
	defer pool.Close()
	hash, err := auth.NewHasher(1).Hash(ctx, seedPassword)
	if err != nil {
		return nil, nil, err
	}
	ledger := app.New(eventstore.New(pool), noWake{}, app.Config{})
	users := make([]seedUser, n)
	tokens := make([]string, n)
	width := len(fmt.Sprint(n))
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				name := fmt.Sprintf("%s%0*d", prefix, width, i+1)
				if _, _, err := ledger.OpenAccount(ctx, name, hash); err != nil && !errors.Is(err, domain.ErrAccountExists) {
					errc <- fmt.Errorf("open %s: %w", name, err)
					return
				}
				tok, err := issuer.Issue(name, false)
				if err != nil {
					errc <- err
					return
				}
				users[i], tokens[i] = seedUser{Username: name, Password: seedPassword}, tok
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return nil, nil, err
	}
	return users, tokens, ctx.Err()
}

// noWake serves the app's read path, which seeding does not use.
type noWake struct{}

func (noWake) C() <-chan struct{} { return nil }

func writeJSONFile(path string, v any) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
