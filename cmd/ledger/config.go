package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Token claims that tie tokens to this service.
const (
	tokenIssuer   = "ledger"
	tokenAudience = "merch-api"
)

// serveConfig is everything `ledger serve` is configured with: environment variables in the
// company's style, each overridable by a flag.
type serveConfig struct {
	Host, DatabaseURL                     string
	Port                                  int
	SigningKeyFile, VerificationKeyFile   string
	TokenTTL                              time.Duration
	AdminUsers                            string
	RunAPI, RunProjectors, CreateDatabase bool
	LogLevel                              string
	DBMaxConns                            int
	ShutdownTimeout                       time.Duration
}

func envInt(name string, def int) int {
	if v := env(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		return -1 // invalid: validate names it
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v := env(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
		return -1
	}
	return def
}

func (c *serveConfig) bind(fs *flag.FlagSet) {
	fs.StringVar(&c.Host, "host", env("APP_HOST"), "address to listen on (env APP_HOST; empty: all interfaces)")
	fs.IntVar(&c.Port, "port", envInt("APP_PORT", 8080), "port to listen on (env APP_PORT)")
	fs.StringVar(&c.DatabaseURL, "database-url", env("APP_POSTGRES_URL", "LEDGER_DATABASE_URL"), "PostgreSQL URL (env APP_POSTGRES_URL or LEDGER_DATABASE_URL)")
	fs.StringVar(&c.SigningKeyFile, "signing-key-file", firstNonEmpty(env("APP_JWT_SIGNATURE_KEY_FILE"), "keys/jwt-signing.pem"),
		"Ed25519 private key for tokens, PEM; created with its pair if both are absent (env APP_JWT_SIGNATURE_KEY_FILE)")
	fs.StringVar(&c.VerificationKeyFile, "verification-key-file", firstNonEmpty(env("APP_JWT_VERIFICATION_KEY_FILE"), "keys/jwt-verification.pem"),
		"Ed25519 public key for tokens, PEM (env APP_JWT_VERIFICATION_KEY_FILE)")
	fs.DurationVar(&c.TokenTTL, "token-ttl", envDuration("APP_TOKEN_TTL", 24*time.Hour), "lifetime of issued tokens (env APP_TOKEN_TTL)")
	fs.StringVar(&c.AdminUsers, "admin-users", env("APP_ADMIN_USERS"), "comma-separated usernames with the admin role (env APP_ADMIN_USERS)")
	fs.BoolVar(&c.RunAPI, "api", true, "serve the HTTP API")
	fs.BoolVar(&c.RunProjectors, "projectors", true, "run the projectors")
	fs.BoolVar(&c.CreateDatabase, "create-database", false, "create the database named in the URL if it does not exist")
	fs.StringVar(&c.LogLevel, "log-level", firstNonEmpty(env("APP_LOG_LEVEL"), "info"), "debug, info, warn or error (env APP_LOG_LEVEL)")
	fs.IntVar(&c.DBMaxConns, "db-max-conns", envInt("APP_DB_MAX_CONNS", 40), "connection pool size (env APP_DB_MAX_CONNS)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "how long a graceful stop may take")
}

func (c *serveConfig) validate() error {
	var errs []error
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("no database: set APP_POSTGRES_URL or pass --database-url"))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port (APP_PORT) must be 0..65535"))
	}
	if c.TokenTTL < time.Minute {
		errs = append(errs, fmt.Errorf("token lifetime (APP_TOKEN_TTL) must be a duration of at least 1m, like 24h"))
	}
	if !c.RunAPI && !c.RunProjectors {
		errs = append(errs, errors.New("--api=false and --projectors=false leave nothing to run"))
	}
	if _, err := c.level(); err != nil {
		errs = append(errs, err)
	}
	if c.DBMaxConns < 4 {
		errs = append(errs, errors.New("db-max-conns (APP_DB_MAX_CONNS) must be at least 4"))
	}
	if c.SigningKeyFile == "" || c.VerificationKeyFile == "" {
		errs = append(errs, errors.New("both key files must be named"))
	}
	return errors.Join(errs...)
}

func (c *serveConfig) level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log level (APP_LOG_LEVEL) %q: want debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

func (c *serveConfig) admins() map[string]bool {
	m := map[string]bool{}
	for _, u := range strings.Split(c.AdminUsers, ",") {
		if u = strings.TrimSpace(u); u != "" {
			m[u] = true
		}
	}
	return m
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
