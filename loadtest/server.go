package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// freshDatabase creates a uniquely named database on the server of serverURL and returns its
// URL and a function that drops it (whoever is still connected).
func freshDatabase(ctx context.Context, serverURL string) (string, func() error, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", nil, err
	}
	name := "ledger_loadtest_" + hex.EncodeToString(rnd[:])
	dbURL, err := withDatabase(serverURL, name)
	if err != nil {
		return "", nil, err
	}
	admin, err := connectAdmin(ctx, serverURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PostgreSQL to create a database: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := connectAdmin(ctx, serverURL)
		if err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		defer admin.Close(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		return nil
	}
	return dbURL, drop, nil
}

// connectAdmin connects to the database u names or, when that one does not exist (yet), to
// the same server's postgres database.
func connectAdmin(ctx context.Context, u string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, u)
	var pe *pgconn.PgError
	if err == nil || !errors.As(err, &pe) || pe.Code != "3D000" { // invalid_catalog_name
		return conn, err
	}
	maintenance, merr := withDatabase(u, "postgres")
	if merr != nil {
		return nil, err
	}
	return pgx.Connect(ctx, maintenance)
}

// withDatabase returns the postgres:// URL u naming database name instead of its own.
func withDatabase(u, name string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil || (pu.Scheme != "postgres" && pu.Scheme != "postgresql") {
		return "", fmt.Errorf("a fresh database needs a postgres://… URL, got %q", redact(u))
	}
	pu.Path = "/" + name
	pu.RawPath = ""
	return pu.String(), nil
}

// redact hides a URL's password.
func redact(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "(unparseable URL)"
	}
	return pu.Redacted()
}

// server is a `ledger serve` process the tool started.
type server struct {
	cmd    *exec.Cmd
	base   string
	logTo  string
	exited chan error
}

// serverKeys names the key pair a started server signs tokens with.
type serverKeys struct{ signing, verification string }

// startServer runs `bin serve` on a free port of 127.0.0.1 against databaseURL, waits until it
// answers /api/ready, and returns it. Its log goes to logFile.
func startServer(ctx context.Context, bin, databaseURL, natsURL string, keys serverKeys, logFile string) (*server, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("ledger binary: %w (build it with make build, or name it with --server-bin)", err)
	}
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	cmd := exec.Command(bin, "serve", "--host", "127.0.0.1", "--port", "0")
	cmd.Env = append(os.Environ(),
		"APP_POSTGRES_URL="+databaseURL,
		"APP_JWT_SIGNATURE_KEY_FILE="+keys.signing,
		"APP_JWT_VERIFICATION_KEY_FILE="+keys.verification,
		"APP_LOG_LEVEL=warn",
		"APP_ADMIN_ADDR=127.0.0.1:0", // beside a ledger already on the default admin port
	)
	if natsURL != "" {
		cmd.Env = append(cmd.Env, "APP_NATS_URL="+natsURL)
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &server{cmd: cmd, logTo: logFile, exited: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "ledger listening on http://"); ok {
				addrc <- addr
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		s.exited <- cmd.Wait()
		logf.Close()
	}()

	fail := func(err error) (*server, error) {
		_ = s.stop()
		return nil, fmt.Errorf("%w; the server's log is %s", err, logFile)
	}
	select {
	case addr := <-addrc:
		s.base = "http://" + addr
	case err := <-s.exited:
		s.exited <- err
		return fail(fmt.Errorf("ledger serve exited before listening: %v", err))
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-time.After(2 * time.Minute):
		return fail(errors.New("ledger serve did not announce its address within 2 minutes"))
	}
	if err := waitReady(ctx, s.base, time.Minute); err != nil {
		return fail(err)
	}
	return s, nil
}

// waitReady polls GET /api/ready until it answers 200.
func waitReady(ctx context.Context, base string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/ready", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if !(realClock{}).Sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("%s/api/ready did not answer 200 within %s (last: %s)", base, within, last)
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop asks the server to shut down gracefully (SIGTERM) and kills it if it takes too long.
func (s *server) stop() error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop the server: %w", err)
	}
	select {
	case err := <-s.exited:
		s.exited <- err
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return fmt.Errorf("the server exited with %d; its log is %s", exit.ExitCode(), s.logTo)
		}
		return err
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		err := <-s.exited
		s.exited <- err
		return fmt.Errorf("the server did not stop within a minute of SIGTERM and was killed; its log is %s", s.logTo)
	}
}

// keyPaths names a key pair in dir.
func keyPaths(dir string) serverKeys {
	return serverKeys{signing: filepath.Join(dir, "jwt-signing.pem"), verification: filepath.Join(dir, "jwt-verification.pem")}
}

// runDatabase returns the database a run loads: with --fresh-database a new one on the
// configured server, announced on stderr, which drop removes; else the configured one, which
// drop leaves alone.
func runDatabase(ctx context.Context, cfg config, stderr io.Writer) (url string, drop func() error, err error) {
	if !cfg.fresh {
		return cfg.databaseURL, func() error { return nil }, nil
	}
	url, drop, err = freshDatabase(ctx, cfg.databaseURL)
	if err != nil {
		return "", nil, err
	}
	fmt.Fprintf(stderr, "created database %s\n", redact(url))
	return url, drop, nil
}
