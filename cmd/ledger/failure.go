package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/term"
)

// failure is what a person is told about a failed command: one sentence saying what went
// wrong, and a hint saying what to do about it where one helps.
type failure struct {
	what, hint string
}

const databaseHint = "set APP_POSTGRES_URL (or pass --database-url) to the ledger's database"

// explain says what err means for the operator. It looks at the errors' types and PostgreSQL's
// SQLSTATE codes, never at message text; an error it does not know is told as it is.
func explain(err error) failure {
	var (
		pgErr    *pgconn.PgError
		connErr  *pgconn.ConnectError
		parseErr *pgconn.ParseConfigError
		dnsErr   *net.DNSError
		keyErr   *keyFileError
		pathErr  *fs.PathError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return failure{what: "interrupted before it finished"}
	case errors.As(err, &pgErr):
		return explainPostgres(pgErr, connErr, errors.As(err, &connErr))
	case errors.As(err, &parseErr):
		return failure{
			what: fmt.Sprintf("the database URL cannot be read: %v", errors.Unwrap(parseErr)),
			hint: "write it as postgres://USER:PASSWORD@HOST:5432/NAME?sslmode=disable, in APP_POSTGRES_URL or --database-url",
		}
	case errors.As(err, &connErr):
		where := postgresAt(connErr.Config)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return failure{what: fmt.Sprintf("cannot connect to PostgreSQL at %s: nothing listens there", where),
				hint: "start PostgreSQL, or " + databaseHint}
		case errors.As(err, &dnsErr):
			return failure{what: fmt.Sprintf("cannot connect to PostgreSQL at %s: host %q is unknown", where, dnsErr.Name),
				hint: databaseHint}
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
			return failure{what: fmt.Sprintf("PostgreSQL at %s did not answer in time", where),
				hint: "check that the server is up and reachable from here"}
		}
		return failure{what: fmt.Sprintf("cannot connect to PostgreSQL at %s: %v", where, errors.Unwrap(connErr)), hint: databaseHint}
	case errors.As(err, &keyErr):
		f := failure{what: err.Error(),
			hint: "the token keys are named by --signing-key-file and --verification-key-file (env APP_JWT_SIGNATURE_KEY_FILE, APP_JWT_VERIFICATION_KEY_FILE)"}
		if errors.As(err, &pathErr) {
			f.what = fmt.Sprintf("cannot use the key file %s: %v", pathErr.Path, pathErr.Err)
		}
		return f
	case errors.As(err, &pathErr) && errors.Is(err, fs.ErrNotExist):
		return failure{what: fmt.Sprintf("%s does not exist", pathErr.Path)}
	case errors.As(err, &pathErr) && errors.Is(err, fs.ErrPermission):
		return failure{what: fmt.Sprintf("no permission to use %s", pathErr.Path),
			hint: "run as a user who may, or name another file"}
	case errors.Is(err, errMismatch):
		return failure{what: err.Error(), hint: "the report above lists each mismatch"}
	}
	return failure{what: err.Error()}
}

// explainPostgres explains an error PostgreSQL answered, by its SQLSTATE code; conn is the
// connection attempt it answered, when it answered one.
func explainPostgres(e *pgconn.PgError, conn *pgconn.ConnectError, connecting bool) failure {
	raw := fmt.Sprintf("%s (SQLSTATE %s)", e.Message, e.Code)
	switch e.Code {
	case pgerrcode.UndefinedTable, pgerrcode.UndefinedColumn, pgerrcode.UndefinedFunction, pgerrcode.UndefinedObject:
		return failure{what: "the database is not migrated for this version of the ledger: " + raw,
			hint: "run `ledger migrate` against it (with the same --database-url or APP_POSTGRES_URL)"}
	case pgerrcode.InvalidCatalogName:
		f := failure{what: "the database does not exist: " + raw,
			hint: "create it, or run `ledger serve --create-database` once"}
		if connecting {
			f.what = fmt.Sprintf("the database %q does not exist on PostgreSQL at %s", conn.Config.Database, postgresAt(conn.Config))
		}
		return f
	case pgerrcode.InvalidPassword, pgerrcode.InvalidAuthorizationSpecification:
		f := failure{what: "PostgreSQL refused the login: " + raw,
			hint: "check the user and password in the database URL (APP_POSTGRES_URL or --database-url)"}
		if connecting {
			f.what = fmt.Sprintf("PostgreSQL at %s refused the login of user %q", postgresAt(conn.Config), conn.Config.User)
		}
		return f
	case pgerrcode.InsufficientPrivilege:
		return failure{what: "the database user may not do this: " + raw,
			hint: "connect as the user that owns the ledger's tables"}
	case pgerrcode.CannotConnectNow, pgerrcode.AdminShutdown, pgerrcode.TooManyConnections:
		return failure{what: "PostgreSQL does not take connections now: " + raw, hint: "try again in a moment"}
	case pgerrcode.SerializationFailure, pgerrcode.DeadlockDetected, pgerrcode.LockNotAvailable:
		return failure{what: "a concurrent change got in the way: " + raw, hint: "run the command again"}
	case pgerrcode.QueryCanceled:
		return failure{what: "PostgreSQL canceled the work: " + raw}
	}
	return failure{what: "PostgreSQL answered an error: " + raw}
}

// postgresAt names a server without the password: postgres://user@host:port/database.
func postgresAt(c *pgconn.Config) string {
	if c == nil {
		return "the configured URL"
	}
	return fmt.Sprintf("postgres://%s@%s/%s", c.User, net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), c.Database)
}

// keyFileError is a failure to load or create the token key pair.
type keyFileError struct{ err error }

func (e *keyFileError) Error() string { return e.err.Error() }
func (e *keyFileError) Unwrap() error { return e.err }

// reportFailure tells that a command failed. A person at a terminal reads one sentence and a
// hint; anything else (a log collector, a script) gets one JSON log line in the format serve
// logs in, with the error as it came, the sentence and the hint as fields.
func reportFailure(w io.Writer, terminal bool, command string, err error) {
	f := explain(err)
	if terminal {
		fmt.Fprintf(w, "%s: %s\n", command, f.what)
		if f.hint != "" {
			fmt.Fprintf(w, "hint: %s\n", f.hint)
		}
		return
	}
	attrs := []any{"err", err.Error(), "problem", f.what}
	if f.hint != "" {
		attrs = append(attrs, "hint", f.hint)
	}
	newLogger(w, slog.LevelInfo).Error(command+" failed", attrs...)
}

// isTerminal reports whether w is a terminal, where a person reads.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
