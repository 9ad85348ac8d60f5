package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ledger/ledger/internal/pgtest"
)

// TestProgressPlainLines: away from a terminal, one line at every tenth of the work, and one
// at least every so often when the tenths come slowly.
func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, false, "audit verify", "events")
	p.report(0, 100)
	for done := int64(1); done <= 100; done++ {
		p.report(done, 100)
	}
	p.finish()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 11 || lines[0] != "audit verify: 0 of 100 events (0%)" || lines[10] != "audit verify: 100 of 100 events (100%)" {
		t.Fatalf("lines:\n%s", out.String())
	}
	if strings.ContainsAny(out.String(), "\r\x1b") {
		t.Errorf("terminal control characters in plain lines: %q", out.String())
	}

	out.Reset()
	p = newProgress(&out, false, "seed", "employees")
	p.every = 50 * time.Millisecond
	p.report(1, 1000)
	p.report(2, 1000) // same tenth, too soon: no line
	time.Sleep(60 * time.Millisecond)
	p.report(3, 1000) // same tenth, but a while since the last line
	if n := strings.Count(out.String(), "\n"); n != 2 || !strings.HasPrefix(out.String(), "seed: 1 of 1000 employees (0%)\n") {
		t.Fatalf("want a line for the first report and one after the wait:\n%s", out.String())
	}
}

// TestProgressOnTerminal: on a terminal, a bar redrawn in place, its line ended at the end.
func TestProgressOnTerminal(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, true, "audit export", "events")
	p.report(0, 200)
	for done := int64(10); done <= 200; done += 10 {
		p.report(done, 200)
	}
	p.finish()
	got := out.String()
	if !strings.Contains(got, "\r") || !regexp.MustCompile(`audit export 100% \|█+\| \(200/200`).MatchString(got) || !strings.HasSuffix(got, "\n") {
		t.Fatalf("no finished bar:\n%q", got)
	}

	// A bar left short ends its line too.
	out.Reset()
	p = newProgress(&out, true, "audit export", "events")
	p.report(10, 200)
	p.finish()
	p.report(20, 200)
	if got := out.String(); !strings.HasSuffix(got, "\n") || strings.Contains(got, "(20/200") {
		t.Fatalf("bar left short:\n%q", got)
	}
}

// TestCommandsShowProgress: seed, audit export and audit verify show their progress: plain
// lines into a log, a bar on a terminal.
func TestCommandsShowProgress(t *testing.T) {
	ctx := context.Background()
	// A database of its own: the employees it seeds and the rebuild stay there.
	own, err := pgtest.Create(ctx, "cmd_progress")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Drop()
	dir := t.TempDir()
	seedArgs := []string{"seed", "--database-url", own.URL, "--users", "30", "--prefix", uniq("progress"),
		"--out-users", filepath.Join(dir, "users.json"), "--out-tokens", filepath.Join(dir, "tokens.json"),
		"--signing-key-file", filepath.Join(dir, "signing.pem"), "--verification-key-file", filepath.Join(dir, "verification.pem")}
	var stdout, stderr bytes.Buffer
	if code := run(ctx, seedArgs, &stdout, &stderr); code != 0 {
		t.Fatalf("seed: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "seed: 30 of 30 employees (100%)") {
		t.Errorf("seed shows no progress:\n%s", stderr.String())
	}
	last := regexp.MustCompile(`(?m)^audit (export|verify): (\d+) of (\d+) events \(100%\)$`)
	for _, cmd := range []string{"export", "verify"} {
		stdout.Reset()
		stderr.Reset()
		args := []string{"audit", cmd, "--database-url", own.URL, "--page-size", "50"}
		if cmd == "export" {
			args = append(args, "--out", filepath.Join(dir, "log.ndjson"))
		}
		if code := run(ctx, args, &stdout, &stderr); code != 0 {
			t.Fatalf("audit %s: exit %d: %s", cmd, code, stderr.String())
		}
		if m := last.FindStringSubmatch(stderr.String()); m == nil || m[1] != cmd || m[2] != m[3] {
			t.Errorf("audit %s shows no progress to the end:\n%s", cmd, stderr.String())
		}
	}

	// The rebuild switches reads to balance v2.
	stderr.Reset()
	if code := run(ctx, []string{"projections", "rebuild", "balance", "--database-url", own.URL, "--page-size", "7", "--grace", "10ms"}, &stdout, &stderr); code != 0 {
		t.Fatalf("rebuild: exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"rebuild balance: 7 of 60 events (11%)\n", "rebuild balance: 60 of 60 events (100%)\n", "\ncatching up (", "\nswitching (", `"msg":"reads switched"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("rebuild output lacks %q:\n%s", want, stderr.String())
		}
	}

	master, tty := openPTY(t)
	stdout.Reset()
	if code := run(ctx, []string{"audit", "verify", "--database-url", own.URL, "--page-size", "50"}, &stdout, tty); code != 0 {
		t.Fatalf("audit verify on a terminal: exit %d", code)
	}
	_ = tty.Close()
	if got := readAll(t, master); !regexp.MustCompile(`audit verify 100% \|█+\|`).MatchString(got) || strings.Contains(got, "of ") {
		t.Errorf("audit verify on a terminal shows no bar:\n%q", got)
	}
}
