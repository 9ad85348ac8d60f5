package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/seed"
)

// runSeed creates employees in bulk through the ordinary open-account command (so each gets
// its events and welcome allowance), and writes the load tool's two files.
func runSeed(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	fs := newFlagSet("seed", stderr)
	bindDatabaseURL(fs, &cfg.DatabaseURL)
	cfg.bindTokenKeys(fs)
	n := fs.Int("users", 10_000, "number of employees")
	prefix := fs.String("prefix", "user", "username prefix; names are PREFIX00001…")
	usersOut := fs.String("out-users", "", "write [{username, password}] here (required)")
	tokensOut := fs.String("out-tokens", "", "write the matching tokens here (required)")
	workers := fs.Int("workers", 16, "concurrent account openings")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *usersOut == "" || *tokensOut == "" || cfg.DatabaseURL == "" || *workers <= 0 {
		fmt.Fprintln(stderr, "ledger seed: need --users > 0, --out-users, --out-tokens and a database (APP_POSTGRES_URL or --database-url)")
		return errUsage
	}
	start := time.Now()
	priv, _, err := auth.LoadOrCreateKeys(cfg.SigningKeyFile, cfg.VerificationKeyFile)
	if err != nil {
		return &keyFileError{err}
	}
	bar := newProgress(stderr, isTerminal(stderr), "seed", "employees")
	users, tokens, err := seed.Run(ctx, seed.Options{
		DatabaseURL: cfg.DatabaseURL,
		Users:       *n,
		Prefix:      *prefix,
		Workers:     *workers,
		Issuer:      auth.NewIssuer(priv, tokenIssuer, tokenAudience, cfg.TokenTTL),
		Progress:    bar.report,
	})
	bar.finish()
	if err != nil {
		return err
	}
	if err := seed.WriteJSONFile(*usersOut, users); err != nil {
		return err
	}
	if err := seed.WriteJSONFile(*tokensOut, tokens); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "seeded %d employees in %s; users in %s, tokens in %s\n", *n, time.Since(start).Round(time.Millisecond), *usersOut, *tokensOut)
	return nil
}
