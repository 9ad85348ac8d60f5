package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestE2EBinary runs the real binary (`ledger serve --port 0`), talks to it, and stops it with
// SIGTERM: it must shut down gracefully and exit 0.
func TestE2EBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	keys := t.TempDir()
	p := startLedger(t, ledgerEnv(db.URL, keys))
	if strings.HasSuffix(p.addr, ":0") || !strings.HasPrefix(p.addr, "127.0.0.1:") {
		t.Fatalf("announced address %q is not the chosen port on the requested host", p.addr)
	}

	api := newAPIClient(t, p.base())
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

	err := p.terminate(time.Minute)
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		t.Fatalf("ledger serve exited with %d after SIGTERM, want 0", exit.ExitCode())
	case err != nil:
		t.Fatalf("ledger serve after SIGTERM: %v", err)
	}
	// The keys it created are the pair files named in the environment.
	for _, f := range []string{"signing.pem", "verification.pem"} {
		if _, err := os.Stat(filepath.Join(keys, f)); err != nil {
			t.Errorf("key file: %v", err)
		}
	}
}
