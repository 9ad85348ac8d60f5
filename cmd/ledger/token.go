package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/auth"
)

// runToken mints a token offline with the signing key, for operators and load tools.
func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg serveConfig
	fs := newFlagSet("token", stderr)
	cfg.bind(fs)
	user := fs.String("user", "", "username the token is for (required)")
	admin := fs.Bool("admin", false, "give the token the admin role")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := domain.ValidateUsername(*user); err != nil {
		fmt.Fprintf(stderr, "ledger token: --user: %v\n", err)
		return errUsage
	}
	if cfg.TokenTTL < time.Minute {
		return errors.New("token lifetime must be at least 1m")
	}
	priv, _, err := auth.LoadOrCreateKeys(cfg.SigningKeyFile, cfg.VerificationKeyFile)
	if err != nil {
		return err
	}
	tok, err := auth.NewIssuer(priv, tokenIssuer, tokenAudience, cfg.TokenTTL).Issue(*user, *admin)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
