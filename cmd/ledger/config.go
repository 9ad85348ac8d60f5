package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/httpapi"
	"github.com/ledger/ledger/internal/relay"
	"github.com/ledger/ledger/internal/standby"
	"github.com/ledger/ledger/projections"
)

// Token claims that tie tokens to this service.
const (
	tokenIssuer   = "ledger"
	tokenAudience = "merch-api"
)

// maxRoleCacheTTL bounds how long a revoked role may keep working on a running server.
const maxRoleCacheTTL = 5 * time.Second

// defaultSigningKeyFile is where the token signing key is unless APP_JWT_SIGNATURE_KEY_FILE says.
func defaultSigningKeyFile() string {
	return firstNonEmpty(env("APP_JWT_SIGNATURE_KEY_FILE"), "keys/jwt-signing.pem")
}

// defaultTokenTTL is the lifetime of tokens unless APP_TOKEN_TTL says.
func defaultTokenTTL() time.Duration {
	return envDuration("APP_TOKEN_TTL", 24*time.Hour)
}

// serveConfig is everything `ledger serve` is configured with: environment variables in the
// company's style, each overridable by a flag.
type serveConfig struct {
	Host, DatabaseURL                     string
	Port                                  int
	SigningKeyFile, VerificationKeyFile   string
	TokenTTL                              time.Duration
	RunAPI, RunProjectors, CreateDatabase bool
	// RunConsole serves the web console under /console/ on the API's port.
	RunConsole      bool
	LogLevel        string
	DBMaxConns      int
	ShutdownTimeout time.Duration
	// Abuse protection of POST /api/auth (0 turns a limit off): failed logins allowed per
	// username from one client address and per client address, refilled over
	// AuthFailureWindow; per username from anywhere, refilled over AuthUserFailureWindow; new
	// accounts per client address an hour; and the reverse proxies whose X-Forwarded-For is
	// believed (comma-separated addresses or CIDR blocks).
	AuthUserClientFailures, AuthClientFailures int
	AuthFailureWindow                          time.Duration
	AuthUserFailures                           int
	AuthUserFailureWindow                      time.Duration
	SignupsPerHour                             int
	TrustedProxies                             string
	// AdminAddr is where pprof and /metrics are served, apart from the API; "" or "off" is
	// none.
	AdminAddr string
	// PublicMetrics serves /metrics on the API's port too (off by default: it is for
	// operators, like the admin listener).
	PublicMetrics bool
	// Throughput tuning: group-commit transactions in flight at once, statements reading read
	// models at once, and the least time between two polls of one projector.
	AppendWriters, ReadSlots int
	PollSpacing              time.Duration
	// RequestTimeout bounds all the database work of one API request; past it, 503.
	RequestTimeout time.Duration
	// MaxConnections caps the API's open client connections; more wait to be accepted.
	MaxConnections int
	// RoleCacheTTL is how long an employee's roles, read from the database for a privileged
	// request, are reused; 0 reads them for every such request.
	RoleCacheTTL time.Duration
	// ReadReplicas are URLs of hot standbys of the database that read queries may run on
	// (ADR 11); ReadReplicaWait bounds how long a read waits for one to replay the primary's
	// position before it reads on the primary.
	ReadReplicas    []string
	ReadReplicaWait time.Duration
	// NATSURL is the NATS server the relay publishes the events to; "" runs no relay.
	// NATSStream and NATSDuplicateWindow are the JetStream stream it creates when absent.
	NATSURL             string
	NATSStream          string
	NATSDuplicateWindow time.Duration
	// LegacyAdminUsers is APP_ADMIN_USERS, which no longer gives anyone a role: set, it stops
	// the start with a message naming what replaced it.
	LegacyAdminUsers string

	// invalidEnv names environment variables whose values could not be parsed.
	invalidEnv []string
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

// envBool reads a boolean variable; an unparsable value is recorded for validate to name.
func (c *serveConfig) envBool(name string, def bool) bool {
	v := env(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		c.invalidEnv = append(c.invalidEnv, fmt.Sprintf("%s=%q: want true or false", name, v))
		return def
	}
	return b
}

// The settings come in groups, and each subcommand binds only the groups it uses, so its -h
// lists its own flags: the database (bindDatabaseURL), the token keys (bindTokenKeys), and
// everything else serve takes (bind, which binds the other two groups as well).

// bindTokenKeys binds the token key pair and the lifetime of the tokens minted with it.
func (c *serveConfig) bindTokenKeys(fs *flag.FlagSet) {
	fs.StringVar(&c.SigningKeyFile, "signing-key-file", defaultSigningKeyFile(),
		"Ed25519 private key for tokens, PEM; created with its pair if both are absent (env APP_JWT_SIGNATURE_KEY_FILE)")
	fs.StringVar(&c.VerificationKeyFile, "verification-key-file", firstNonEmpty(env("APP_JWT_VERIFICATION_KEY_FILE"), "keys/jwt-verification.pem"),
		"Ed25519 public key for tokens, PEM (env APP_JWT_VERIFICATION_KEY_FILE)")
	fs.DurationVar(&c.TokenTTL, "token-ttl", defaultTokenTTL(), "lifetime of issued tokens (env APP_TOKEN_TTL)")
}

// bind binds everything `ledger serve` takes.
func (c *serveConfig) bind(fs *flag.FlagSet) {
	bindDatabaseURL(fs, &c.DatabaseURL)
	c.bindTokenKeys(fs)
	fs.StringVar(&c.Host, "host", env("APP_HOST"), "address to listen on (env APP_HOST; empty: all interfaces)")
	fs.IntVar(&c.Port, "port", envInt("APP_PORT", 8080), "port to listen on (env APP_PORT)")
	fs.DurationVar(&c.RoleCacheTTL, "role-cache-ttl", envDuration("APP_ROLE_CACHE_TTL", 2*time.Second),
		"how long roles read from the database are reused for privileged requests; a revoked role works at most this long (env APP_ROLE_CACHE_TTL; 0: none)")
	c.LegacyAdminUsers = env("APP_ADMIN_USERS")
	fs.BoolVar(&c.RunAPI, "api", true, "serve the HTTP API")
	fs.BoolVar(&c.RunProjectors, "projectors", true, "run the projectors")
	fs.BoolVar(&c.RunConsole, "console", c.envBool("APP_CONSOLE", true), "serve the web console under /console/ on the API's port (env APP_CONSOLE)")
	fs.BoolVar(&c.CreateDatabase, "create-database", false, "create the database named in the URL if it does not exist")
	fs.StringVar(&c.LogLevel, "log-level", firstNonEmpty(env("APP_LOG_LEVEL"), "info"), "debug, info, warn or error (env APP_LOG_LEVEL)")
	fs.IntVar(&c.DBMaxConns, "db-max-conns", envInt("APP_DB_MAX_CONNS", 40), "connection pool size (env APP_DB_MAX_CONNS)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "how long a graceful stop may take")
	fs.IntVar(&c.AuthUserClientFailures, "auth-user-client-failures", envInt("APP_AUTH_USER_CLIENT_FAILURES", 10),
		"failed logins allowed per username from one client address, refilled over --auth-failure-window (env APP_AUTH_USER_CLIENT_FAILURES; 0: no limit)")
	fs.IntVar(&c.AuthClientFailures, "auth-client-failures", envInt("APP_AUTH_CLIENT_FAILURES", 100),
		"failed logins allowed per client address, refilled over --auth-failure-window (env APP_AUTH_CLIENT_FAILURES; 0: no limit)")
	fs.DurationVar(&c.AuthFailureWindow, "auth-failure-window", envDuration("APP_AUTH_FAILURE_WINDOW", 15*time.Minute),
		"how long the per-client login allowances take to come back in full (env APP_AUTH_FAILURE_WINDOW)")
	fs.IntVar(&c.AuthUserFailures, "auth-user-failures", envInt("APP_AUTH_USER_FAILURES", 100),
		"failed logins allowed per username from all addresses together, refilled over --auth-user-failure-window (env APP_AUTH_USER_FAILURES; 0: no limit)")
	fs.DurationVar(&c.AuthUserFailureWindow, "auth-user-failure-window", envDuration("APP_AUTH_USER_FAILURE_WINDOW", 24*time.Hour),
		"how long the per-username login allowance takes to come back in full (env APP_AUTH_USER_FAILURE_WINDOW)")
	fs.IntVar(&c.SignupsPerHour, "signups-per-hour", envInt("APP_SIGNUPS_PER_HOUR", 10),
		"new accounts allowed per client address an hour (env APP_SIGNUPS_PER_HOUR; 0: no limit)")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", env("APP_TRUSTED_PROXIES"),
		"comma-separated addresses or CIDR blocks of reverse proxies whose X-Forwarded-For names the client (env APP_TRUSTED_PROXIES; empty: none)")
	fs.StringVar(&c.AdminAddr, "admin-addr", firstNonEmpty(env("APP_ADMIN_ADDR"), defaultAdminAddr),
		"host:port of the admin listener serving pprof and /metrics (env APP_ADMIN_ADDR; off: none)")
	fs.BoolVar(&c.PublicMetrics, "public-metrics", c.envBool("APP_PUBLIC_METRICS", false),
		"serve /metrics on the API's port too (env APP_PUBLIC_METRICS)")
	fs.IntVar(&c.AppendWriters, "append-writers", envInt("APP_APPEND_WRITERS", 4),
		"group-commit transactions in flight at once; appends arriving meanwhile share the next (env APP_APPEND_WRITERS)")
	fs.IntVar(&c.ReadSlots, "read-slots", envInt("APP_READ_SLOTS", 4),
		"statements reading read models at once; reads arriving meanwhile share the next (env APP_READ_SLOTS)")
	fs.DurationVar(&c.PollSpacing, "projector-poll-spacing", envDuration("APP_PROJECTOR_POLL_SPACING", projections.DefaultPollSpacing),
		"least time between two polls of one projector: larger batches, at most this much more lag (env APP_PROJECTOR_POLL_SPACING; 0: none)")
	fs.DurationVar(&c.RequestTimeout, "request-timeout", envDuration("APP_REQUEST_TIMEOUT", httpapi.DefaultRequestTimeout),
		"how long one API request may wait on the database in all before it answers 503 (env APP_REQUEST_TIMEOUT)")
	for _, u := range strings.Split(env("APP_READ_REPLICA_URLS"), ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.ReadReplicas = append(c.ReadReplicas, u)
		}
	}
	fromEnv := len(c.ReadReplicas) > 0
	fs.Func("read-replica", "URL of a hot standby of the database that read queries may run on; repeatable (env APP_READ_REPLICA_URLS, comma-separated; the flags replace it)",
		func(u string) error {
			if fromEnv {
				c.ReadReplicas, fromEnv = nil, false
			}
			c.ReadReplicas = append(c.ReadReplicas, u)
			return nil
		})
	fs.DurationVar(&c.ReadReplicaWait, "read-replica-wait", envDuration("APP_READ_REPLICA_WAIT", standby.DefaultWait),
		"how long a read waits for a standby to replay the primary's position before it reads on the primary (env APP_READ_REPLICA_WAIT; 0: read on a standby only when it is already there)")
	c.bindNATS(fs)
	fs.IntVar(&c.MaxConnections, "max-connections", envInt("APP_MAX_CONNECTIONS", defaultMaxConnections),
		"most client connections the API keeps open at once; more wait to be accepted (env APP_MAX_CONNECTIONS)")
}

// bindNATS binds where the events go: the settings of the relay, and of the events commands.
func (c *serveConfig) bindNATS(fs *flag.FlagSet) {
	fs.StringVar(&c.NATSURL, "nats-url", env("APP_NATS_URL"),
		"NATS server with JetStream to publish the events to, nats://[user:password@]host:4222 (env APP_NATS_URL; empty: no relay)")
	fs.StringVar(&c.NATSStream, "nats-stream", firstNonEmpty(env("APP_NATS_STREAM"), relay.DefaultStream),
		"JetStream stream of the events, created when absent (env APP_NATS_STREAM)")
	fs.DurationVar(&c.NATSDuplicateWindow, "nats-duplicate-window", envDuration("APP_NATS_DUPLICATE_WINDOW", relay.MinDuplicateWindow),
		"de-duplication window of the stream when the relay creates it; at least 2m (env APP_NATS_DUPLICATE_WINDOW)")
}

// relayConfig is the relay's configuration.
func (c *serveConfig) relayConfig() relay.Config {
	return relay.Config{URL: c.NATSURL, Stream: c.NATSStream, DuplicateWindow: c.NATSDuplicateWindow}
}

// validateNATS reports invalid relay settings.
func (c *serveConfig) validateNATS() error {
	var errs []error
	if c.NATSDuplicateWindow != 0 && c.NATSDuplicateWindow < relay.MinDuplicateWindow {
		errs = append(errs, fmt.Errorf("NATS duplicate window (APP_NATS_DUPLICATE_WINDOW) must be a duration of at least %v, like 5m", relay.MinDuplicateWindow))
	}
	if strings.ContainsAny(c.NATSStream, ".*> \t/\\") {
		errs = append(errs, fmt.Errorf("NATS stream (APP_NATS_STREAM) %q: want a JetStream stream name, like LEDGER", c.NATSStream))
	}
	return errors.Join(errs...)
}

// defaultAdminAddr keeps the admin listener, which has no authentication, on loopback.
const defaultAdminAddr = "127.0.0.1:6060"

// adminListener is the admin listener's address, or "" for none ("off", or nothing).
func (c *serveConfig) adminListener() string {
	if c.AdminAddr == "off" {
		return ""
	}
	return c.AdminAddr
}

// maxRequestTimeout keeps a request's deadline well inside the API server's write timeout, so
// that its 503 still reaches the client.
const maxRequestTimeout = 20 * time.Second

// defaultMaxConnections leaves room under a file-descriptor limit of 8192 for the database
// pool, the admin listener and the process's files.
const defaultMaxConnections = 4096

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
	if c.RoleCacheTTL < 0 || c.RoleCacheTTL > maxRoleCacheTTL {
		errs = append(errs, fmt.Errorf("role cache time (APP_ROLE_CACHE_TTL) must be a duration from 0 to %s, like 2s", maxRoleCacheTTL))
	}
	if c.LegacyAdminUsers != "" {
		errs = append(errs, errors.New("APP_ADMIN_USERS is no longer supported: roles live in the database and only operators give them. "+
			"Give each existing admin the role with `ledger users grant NAME admin` (or create one with `ledger users create NAME --role admin --password-stdin`), then unset APP_ADMIN_USERS"))
	}
	if c.AppendWriters < 1 || c.ReadSlots < 1 {
		errs = append(errs, errors.New("append writers (APP_APPEND_WRITERS) and read slots (APP_READ_SLOTS) must be at least 1"))
	}
	if c.RequestTimeout < 100*time.Millisecond || c.RequestTimeout > maxRequestTimeout {
		errs = append(errs, fmt.Errorf("request timeout (APP_REQUEST_TIMEOUT) must be a duration from 100ms to %v, like 3s", maxRequestTimeout))
	}
	for i, u := range c.ReadReplicas {
		if _, err := pgxpool.ParseConfig(u); err != nil { // the message would show a password
			errs = append(errs, fmt.Errorf("read replica %d of %d (--read-replica, APP_READ_REPLICA_URLS) is not a PostgreSQL URL", i+1, len(c.ReadReplicas)))
		}
	}
	if c.ReadReplicaWait < 0 || c.ReadReplicaWait > time.Second {
		errs = append(errs, errors.New("read replica wait (APP_READ_REPLICA_WAIT) must be a duration from 0 to 1s, like 50ms"))
	}
	if c.MaxConnections < 1 {
		errs = append(errs, errors.New("max connections (APP_MAX_CONNECTIONS) must be at least 1"))
	}
	if c.PollSpacing < 0 || c.PollSpacing > time.Second {
		errs = append(errs, errors.New("projector poll spacing (APP_PROJECTOR_POLL_SPACING) must be a duration from 0 to 1s, like 5ms"))
	}
	if !c.RunAPI && !c.RunProjectors {
		errs = append(errs, errors.New("--api=false and --projectors=false leave nothing to run"))
	}
	if err := c.validateNATS(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.level(); err != nil {
		errs = append(errs, err)
	}
	if c.DBMaxConns < 4 {
		errs = append(errs, errors.New("db-max-conns (APP_DB_MAX_CONNS) must be at least 4"))
	}
	if _, err := c.authLimits(); err != nil {
		errs = append(errs, err)
	}
	if c.SigningKeyFile == "" || c.VerificationKeyFile == "" {
		errs = append(errs, errors.New("both key files must be named"))
	}
	if c.adminListener() != "" {
		if _, port, err := net.SplitHostPort(c.AdminAddr); err != nil {
			errs = append(errs, fmt.Errorf("admin address (APP_ADMIN_ADDR) %q: want host:port, like 127.0.0.1:6060", c.AdminAddr))
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			errs = append(errs, fmt.Errorf("admin address (APP_ADMIN_ADDR) %q: port must be 0..65535", c.AdminAddr))
		}
	}
	for _, v := range c.invalidEnv {
		errs = append(errs, fmt.Errorf("invalid environment variable %s", v))
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

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// authLimits is the abuse protection of POST /api/auth the configuration asks for.
func (c *serveConfig) authLimits() (httpapi.AuthLimits, error) {
	l := httpapi.AuthLimits{UserClientFailures: c.AuthUserClientFailures, ClientFailures: c.AuthClientFailures,
		Window: c.AuthFailureWindow, UserFailures: c.AuthUserFailures, UserWindow: c.AuthUserFailureWindow,
		SignupsPerHour: c.SignupsPerHour}
	var errs []error
	for _, n := range []struct {
		value int
		name  string
	}{
		{l.UserClientFailures, "auth-user-client-failures (APP_AUTH_USER_CLIENT_FAILURES)"},
		{l.ClientFailures, "auth-client-failures (APP_AUTH_CLIENT_FAILURES)"},
		{l.UserFailures, "auth-user-failures (APP_AUTH_USER_FAILURES)"},
		{l.SignupsPerHour, "signups-per-hour (APP_SIGNUPS_PER_HOUR)"},
	} {
		if n.value < 0 {
			errs = append(errs, fmt.Errorf("%s must be a number of at least 0", n.name))
		}
	}
	if (l.UserClientFailures > 0 || l.ClientFailures > 0) && l.Window < time.Second {
		errs = append(errs, errors.New("auth-failure-window (APP_AUTH_FAILURE_WINDOW) must be a duration of at least 1s, like 15m"))
	}
	if l.UserFailures > 0 && l.UserWindow < time.Second {
		errs = append(errs, errors.New("auth-user-failure-window (APP_AUTH_USER_FAILURE_WINDOW) must be a duration of at least 1s, like 24h"))
	}
	for _, p := range strings.Split(c.TrustedProxies, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				errs = append(errs, fmt.Errorf("trusted proxy (APP_TRUSTED_PROXIES) %q: want an IP address or a CIDR block like 10.0.0.0/8", p))
				continue
			}
			addr = addr.Unmap()
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		l.TrustedProxies = append(l.TrustedProxies, prefix.Masked())
	}
	return l, errors.Join(errs...)
}
