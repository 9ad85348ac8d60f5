package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestE2EBinary builds the real binary, runs `ledger serve --port 0`, talks to it, and stops it
// with SIGTERM: it must shut down gracefully and exit 0.
func TestE2EBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "ledger")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "serve", "--port", "0", "--host", "127.0.0.1")
	cmd.Env = append(os.Environ(),
		"APP_POSTGRES_URL="+db.URL,
		"APP_JWT_SIGNATURE_KEY_FILE="+filepath.Join(dir, "keys", "signing.pem"),
		"APP_JWT_VERIFICATION_KEY_FILE="+filepath.Join(dir, "keys", "verification.pem"),
		"APP_ADMIN_USERS=admin",
		"APP_LOG_LEVEL=warn",
		"APP_DB_MAX_CONNS=8",
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var stdoutRest bytes.Buffer
	var stdoutDone sync.WaitGroup
	addrc := make(chan string, 1)
	stdoutDone.Add(1)
	go func() {
		defer stdoutDone.Done()
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if addr, ok := strings.CutPrefix(line, "ledger listening on http://"); ok && !sent {
				addrc <- addr
				sent = true
				continue
			}
			stdoutRest.WriteString(line + "\n")
		}
		close(addrc)
	}()
	go func() {
		stdoutDone.Wait() // Wait closes the pipe: read it all first
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("stderr of ledger serve:\n%s", stderr.String())
		}
	})

	// Generous bounds: guards against a hang, not performance expectations.
	var addr string
	select {
	case a, ok := <-addrc:
		if !ok {
			t.Fatalf("ledger serve ended without announcing its address")
		}
		addr = a
	case err := <-exited:
		stopped = true
		t.Fatalf("ledger serve exited before listening: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("ledger serve never announced its address")
	}
	if strings.HasSuffix(addr, ":0") || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("announced address %q is not the chosen port on the requested host", addr)
	}

	api := newAPIClient(t, "http://"+addr)
	api.waitReady(t)
	name := uniq("binary")
	tok := api.login(t, name)
	if in := api.info(t, tok); in.Coins != 1000 || len(in.Inventory) != 0 {
		t.Fatalf("fresh employee: %s", in)
	}
	wantOK(t, api.buy(t, tok, "cup"))
	if in := api.info(t, tok); in.Coins != 980 || in.items()["cup"] != 1 {
		t.Fatalf("after buying a cup: %s", in)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("ledger serve exited with %d after SIGTERM, want 0", exit.ExitCode())
		}
		if err != nil {
			t.Fatalf("ledger serve: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("ledger serve did not exit within a minute of SIGTERM")
	}
	if rest := strings.TrimSpace(stdoutRest.String()); rest != "" {
		t.Logf("further output on stdout: %s", rest)
	}
	// The keys it created are the pair files named in the environment.
	for _, f := range []string{"signing.pem", "verification.pem"} {
		if _, err := os.Stat(filepath.Join(dir, "keys", f)); err != nil {
			t.Errorf("key file: %v", err)
		}
	}
}
