package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

// TestHelpListsOwnFlags runs every subcommand's -h: it exits 0 and lists exactly the
// command's own flags, none of another command's.
func TestHelpListsOwnFlags(t *testing.T) {
	database := []string{"database-url"}
	keys := []string{"signing-key-file", "verification-key-file", "token-ttl"}
	nats := []string{"nats-url", "nats-stream", "nats-duplicate-window"}
	cases := []struct {
		args  []string
		flags []string // nil: not checked (the command's owner lists them)
	}{
		{[]string{"migrate"}, database},
		{[]string{"seed"}, slices.Concat(database, keys, []string{"users", "prefix", "out-users", "out-tokens", "workers"})},
		{[]string{"projections", "status"}, slices.Concat(database, []string{"json"})},
		{[]string{"projections", "rebuild"}, slices.Concat(database, []string{"page-size", "grace"})},
		{[]string{"audit", "export"}, slices.Concat(database, []string{"after", "until", "out", "page-size"})},
		{[]string{"audit", "verify"}, slices.Concat(database, []string{"page-size", "workers"})},
		{[]string{"events", "republish"}, slices.Concat(database, nats, []string{"from", "from-start", "page-size"})},
		{[]string{"events", "tail"}, slices.Concat(database, nats, []string{"from", "from-start", "type", "account"})},
		{[]string{"probe"}, []string{"timeout"}},
		{[]string{"version"}, []string{}},
		{[]string{"serve"}, nil},
		{[]string{"token"}, nil},
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z-]+)`)
	for _, c := range cases {
		for _, h := range []string{"-h", "--help"} {
			var stdout, stderr bytes.Buffer
			args := append(slices.Clone(c.args), h)
			if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
				t.Errorf("ledger %s: exit %d, want 0\n%s", strings.Join(args, " "), code, stderr.String())
				continue
			}
			if c.flags == nil {
				continue
			}
			var listed []string
			for _, m := range flagLine.FindAllStringSubmatch(stderr.String(), -1) {
				listed = append(listed, m[1])
			}
			slices.Sort(listed)
			want := slices.Sorted(slices.Values(c.flags))
			if !slices.Equal(listed, want) {
				t.Errorf("ledger %s lists flags %v, want %v", strings.Join(args, " "), listed, want)
			}
		}
	}
	// The command groups' own help, and the binary's.
	for _, args := range [][]string{{"-h"}, {"help"}, {"projections", "-h"}, {"audit", "--help"}, {"events", "-h"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Errorf("ledger %s: exit %d, want 0", strings.Join(args, " "), code)
		}
	}
	// A flag the command does not take is still a usage error.
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"seed", "--port", "1"}, &stdout, &stderr); code != 2 {
		t.Errorf("ledger seed --port 1: exit %d, want 2", code)
	}
}

func TestRebuildHelpNamesProjections(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"projections", "rebuild", "-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(stderr.String(), "NAME is one of: balance, inventory, history") {
		t.Errorf("rebuild -h does not name the projections:\n%s", stderr.String())
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			t.Fatalf("ledger %s: exit %d: %s", args[0], code, stderr.String())
		}
		if !strings.HasPrefix(stdout.String(), "ledger ") || !strings.Contains(stdout.String(), "go1.") {
			t.Errorf("ledger %s printed %q", args[0], stdout.String())
		}
	}
	got := versionText(&debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/ledger/ledger", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"}, {Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "arm64"},
		},
	})
	want := "ledger v1.4.0\n  revision  0123abcd\n  time      2026-12-01T10:00:00Z\n  modified  true\n  go        go1.26.8 linux/arm64\n"
	if got != want {
		t.Errorf("version text:\n%s\nwant:\n%s", got, want)
	}
}

// unmigratedDatabase creates an empty database and returns its URL.
func unmigratedDatabase(t *testing.T) string {
	t.Helper()
	name := "ledger_test_cli_" + strings.ReplaceAll(uniq("empty"), "-", "_")
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = db.Pool.Exec(context.Background(), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	return databaseNamed(t, name)
}

func databaseNamed(t *testing.T, name string) string {
	t.Helper()
	u, err := url.Parse(db.URL)
	if err != nil || u.Scheme == "" {
		t.Skipf("the test database URL is not a URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// TestExplainFailures checks what an operator is told for the failures they meet most, each
// produced for real where it can be.
func TestExplainFailures(t *testing.T) {
	ctx := context.Background()
	refusedURL := "postgres://ledger@127.0.0.1:1/ledger?sslmode=disable&connect_timeout=5"
	keyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(keyDir, "signing.pem"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		args       []string
		what, hint string
	}{
		{"not migrated", []string{"audit", "verify", "--database-url", unmigratedDatabase(t)},
			"the database is not migrated", "run `ledger migrate`"},
		{"connection refused", []string{"migrate", "--database-url", refusedURL},
			"cannot connect to PostgreSQL at postgres://ledger@127.0.0.1:1/ledger: nothing listens there", "APP_POSTGRES_URL"},
		{"no such database", []string{"projections", "status", "--database-url", databaseNamed(t, "ledger_test_cli_absent")},
			`the database "ledger_test_cli_absent" does not exist`, "--create-database"},
		{"bad URL", []string{"migrate", "--database-url", "postgres://a@b:notaport/c"},
			"the database URL cannot be read", "postgres://USER:PASSWORD@HOST:5432/NAME"},
		{"half a key pair", []string{"seed", "--database-url", refusedURL, "--out-users", filepath.Join(keyDir, "u"), "--out-tokens", filepath.Join(keyDir, "t"),
			"--signing-key-file", filepath.Join(keyDir, "signing.pem"), "--verification-key-file", filepath.Join(keyDir, "verification.pem")},
			"verification key", "--verification-key-file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(ctx, c.args, &stdout, &stderr); code != 1 {
				t.Fatalf("exit %d, want 1: %s", code, stderr.String())
			}
			// Not a terminal: one JSON line, with the sentence and the hint as fields.
			var line struct {
				Level, Msg, Err, Problem, Hint string
			}
			if err := json.Unmarshal(stderr.Bytes(), &line); err != nil {
				t.Fatalf("not one JSON line: %v\n%s", err, stderr.String())
			}
			if line.Level != "ERROR" || !strings.HasPrefix(line.Msg, "ledger ") || line.Err == "" {
				t.Errorf("log line %+v", line)
			}
			if !strings.Contains(line.Problem, c.what) || !strings.Contains(line.Hint, c.hint) {
				t.Errorf("told %q, hint %q; want %q and %q", line.Problem, line.Hint, c.what, c.hint)
			}
		})
	}
}

// TestExplainPostgresCodes maps SQLSTATE codes, wrapped as the packages wrap them; the message
// text plays no part.
func TestExplainPostgresCodes(t *testing.T) {
	cases := map[string]string{
		"42P01": "not migrated",
		"42703": "not migrated",
		"28P01": "refused the login",
		"57P03": "does not take connections now",
		"40001": "concurrent change",
		"XX000": "PostgreSQL answered an error",
	}
	for code, want := range cases {
		err := fmt.Errorf("audit: read: %w", &pgconn.PgError{Code: code, Message: "relation \"streams\" does not exist"})
		if f := explain(err); !strings.Contains(f.what, want) || !strings.Contains(f.what, code) {
			t.Errorf("SQLSTATE %s: told %q, want %q", code, f.what, want)
		}
	}
	if f := explain(fmt.Errorf("x: %w", context.Canceled)); f.what != "interrupted before it finished" {
		t.Errorf("canceled: %q", f.what)
	}
	if f := explain(fmt.Errorf("%w: 3 mismatches", errMismatch)); f.hint == "" {
		t.Errorf("mismatch without hint: %+v", f)
	}
}

// TestFailureOnTerminal: a person at a terminal reads a sentence and a hint, not a JSON line.
func TestFailureOnTerminal(t *testing.T) {
	master, tty := openPTY(t)
	if !isTerminal(tty) {
		t.Fatal("the pseudo-terminal is not taken for a terminal")
	}
	var stdout bytes.Buffer
	code := run(context.Background(), []string{"audit", "verify", "--database-url", unmigratedDatabase(t)}, &stdout, tty)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	_ = tty.Close()
	got := strings.ReplaceAll(readAll(t, master), "\r\n", "\n")
	want := regexp.MustCompile("^ledger audit verify: the database is not migrated for this version of the ledger: .*\\(SQLSTATE 42P01\\)\nhint: run `ledger migrate` against it.*\n$")
	if !want.MatchString(got) || strings.Contains(got, "{") {
		t.Errorf("on a terminal:\n%q", got)
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for name, out := range map[string]io.Writer{"file": f, "pipe": w, "buffer": &bytes.Buffer{}} {
		if isTerminal(out) {
			t.Errorf("a %s is taken for a terminal", name)
		}
	}
}

// openPTY opens a pseudo-terminal pair: what is written to tty is read from master.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { _ = master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { _ = tty.Close() })
	return master, tty
}

// readAll reads what the terminal showed, until nothing more comes.
func readAll(t *testing.T, master *os.File) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	for {
		_ = master.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := master.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return string(out)
		}
	}
}
