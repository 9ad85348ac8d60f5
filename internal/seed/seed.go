// Package seed creates employees in bulk through the ordinary open-account command, so each one
// gets its opening events and welcome allowance exactly as a first login would give them, and
// mints their tokens offline with the signing key. `ledger seed` and the load tool share it: the
// load tool's two files (users and tokens, in the same order) are what it returns.
package seed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/migrations"
)

// Password is every seeded employee's password: one hash serves them all.
const Password = "load-test-password"

// User is one entry of the users file the company's load tool reads.
type User struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// TokenIssuer mints an employee's access token; *auth.Issuer is one.
type TokenIssuer interface {
	Issue(username string, roles ...auth.Role) (string, error)
}

var _ TokenIssuer = (*auth.Issuer)(nil)

// Options say what to seed and where.
type Options struct {
	// DatabaseURL is the ledger's database; it is migrated first.
	DatabaseURL string
	// Users is how many employees to create, named Username(Prefix, i, Users).
	Users  int
	Prefix string
	// Workers is how many accounts are opened concurrently.
	Workers int
	// Issuer mints the tokens; they must carry the claims the server verifies.
	Issuer TokenIssuer
	// Progress, when set, is told how many of the employees are done after each one; the
	// workers call it concurrently.
	Progress func(done, total int64)
}

func (o Options) validate() error {
	var errs []error
	if o.DatabaseURL == "" {
		errs = append(errs, errors.New("no database URL"))
	}
	if o.Users <= 0 {
		errs = append(errs, fmt.Errorf("users must be positive, got %d", o.Users))
	}
	if o.Workers <= 0 {
		errs = append(errs, fmt.Errorf("workers must be positive, got %d", o.Workers))
	}
	if o.Issuer == nil {
		errs = append(errs, errors.New("no token issuer"))
	}
	if o.Users > 0 {
		if err := domain.ValidateUsername(Username(o.Prefix, o.Users-1, o.Users)); err != nil {
			errs = append(errs, fmt.Errorf("prefix %q: %w", o.Prefix, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	return nil
}

// Username is the name of the i-th (from 0) of n seeded employees: PREFIX00001… with as many
// digits as n has, so names sort in creation order.
func Username(prefix string, i, n int) string {
	return fmt.Sprintf("%s%0*d", prefix, len(fmt.Sprint(n)), i+1)
}

// Run opens the employees' accounts (those that exist already are kept as they are) and
// returns them with a fresh token each, in the same order.
func Run(ctx context.Context, o Options) ([]User, []string, error) {
	if err := o.validate(); err != nil {
		return nil, nil, err
	}
	if _, err := migrations.Apply(ctx, o.DatabaseURL); err != nil {
		return nil, nil, err
	}
	pcfg, err := pgxpool.ParseConfig(o.DatabaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("seed: database URL: %w", err)
	}
	pcfg.MaxConns = int32(max(4, min(o.Workers, 32)))
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, nil, fmt.Errorf("seed: database pool: %w", err)
	}
	defer pool.Close()

	names := make([]string, o.Users)
	for i := range names {
		names[i] = Username(o.Prefix, i, o.Users)
	}
	existing, err := existingUsers(ctx, pool, names)
	if err != nil {
		return nil, nil, err
	}
	hash, err := auth.NewHasher(1).Hash(ctx, Password)
	if err != nil {
		return nil, nil, err
	}
	ledger := app.New(eventstore.New(pool), noWake{}, app.Config{})
	users := make([]User, o.Users)
	tokens := make([]string, o.Users)
	var next, finished atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, o.Workers)
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.Users || ctx.Err() != nil {
					return
				}
				name := names[i]
				if !existing[name] {
					if _, _, err := ledger.OpenAccount(ctx, name, hash); err != nil && !errors.Is(err, domain.ErrAccountExists) {
						errc <- fmt.Errorf("seed: open %s: %w", name, err)
						return
					}
				}
				tok, err := o.Issuer.Issue(name)
				if err != nil {
					errc <- fmt.Errorf("seed: token for %s: %w", name, err)
					return
				}
				users[i], tokens[i] = User{Username: name, Password: Password}, tok
				if o.Progress != nil {
					o.Progress(finished.Add(1), int64(o.Users))
				}
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

// existingUsers returns which of names are employees already, so a second seeding of the same
// database only mints tokens.
func existingUsers(ctx context.Context, pool *pgxpool.Pool, names []string) (map[string]bool, error) {
	rows, err := pool.Query(ctx, `SELECT username FROM users WHERE username = ANY($1)`, names)
	if err != nil {
		return nil, fmt.Errorf("seed: read existing employees: %w", err)
	}
	defer rows.Close()
	found := make(map[string]bool)
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("seed: read existing employees: %w", err)
		}
		found[n] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("seed: read existing employees: %w", err)
	}
	return found, nil
}

// noWake serves the app's read path, which seeding does not use.
type noWake struct{}

func (noWake) C() <-chan struct{} { return nil }

// WriteJSONFile writes v as JSON to path (owner-only: the tokens are credentials), creating
// its directory when needed.
func WriteJSONFile(path string, v any) error {
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

// ReadFiles reads a users file and its tokens file, as Run's results are written by `ledger
// seed`, and checks that they pair up.
func ReadFiles(usersPath, tokensPath string) ([]User, []string, error) {
	var users []User
	var tokens []string
	if err := readJSONFile(usersPath, &users); err != nil {
		return nil, nil, err
	}
	if err := readJSONFile(tokensPath, &tokens); err != nil {
		return nil, nil, err
	}
	if len(users) != len(tokens) {
		return nil, nil, fmt.Errorf("%s lists %d users but %s holds %d tokens; they must pair up in order", usersPath, len(users), tokensPath, len(tokens))
	}
	for i, u := range users {
		if u.Username == "" || tokens[i] == "" {
			return nil, nil, fmt.Errorf("entry %d of %s or %s is empty", i, usersPath, tokensPath)
		}
	}
	return users, tokens, nil
}

func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
