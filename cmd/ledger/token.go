package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/auth"
)

// runToken mints a token offline with the signing key, for operators and load tools: for an
// employee who exists, naming the roles they have now (a hint only: the server checks roles
// against the database). It never creates keys: a key made here would sign tokens the server
// refuses.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stderr)
	user := fs.String("user", "", "username the token is for; the employee must exist (required)")
	dbURL := databaseURLFlag(fs)
	keyFile := fs.String("signing-key-file", defaultSigningKeyFile(),
		"Ed25519 private key the server verifies tokens with, PEM; never created (env APP_JWT_SIGNATURE_KEY_FILE)")
	ttl := fs.Duration("token-ttl", defaultTokenTTL(), "lifetime of the token (env APP_TOKEN_TTL)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // the flags were printed, as asked
		}
		return errUsage // and the flag package said why
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ledger token: unexpected arguments %q\n", fs.Args())
		return errUsage
	}
	if err := domain.ValidateUsername(*user); err != nil {
		fmt.Fprintf(stderr, "ledger token: --user: %v\n", err)
		return errUsage
	}
	if *dbURL == "" {
		fmt.Fprintln(stderr, "ledger token: no database: set APP_POSTGRES_URL or pass --database-url (the token names the employee's roles)")
		return errUsage
	}
	if *ttl < time.Minute {
		fmt.Fprintln(stderr, "ledger token: --token-ttl (APP_TOKEN_TTL) must be a duration of at least 1m, like 24h")
		return errUsage
	}
	priv, err := auth.LoadSigningKey(*keyFile)
	if errors.Is(err, auth.ErrKeyFileMissing) {
		return fmt.Errorf("cannot find the signing key file %s: point --signing-key-file (or APP_JWT_SIGNATURE_KEY_FILE) at the key the server uses; this command never creates keys", *keyFile)
	}
	if err != nil {
		return err
	}
	ledger, done, err := usersApp(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer done()
	id, err := ledger.LookupIdentity(ctx, *user)
	if err != nil {
		return userError(*user, err)
	}
	roles, err := ledger.Roles(ctx, id.Username)
	if err != nil {
		return err
	}
	tok, err := auth.NewIssuer(priv, tokenIssuer, tokenAudience, *ttl).Issue(id.Username, roles.List()...)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
