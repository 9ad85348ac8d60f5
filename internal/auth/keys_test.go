package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func keyPaths(t *testing.T) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "secrets", "jwt")
	return filepath.Join(dir, "signing.pem"), filepath.Join(dir, "verification.pem")
}

func TestLoadOrCreateKeysRoundTrip(t *testing.T) {
	privPath, pubPath := keyPaths(t)

	priv, pub, err := LoadOrCreateKeys(privPath, pubPath)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if !pub.Equal(priv.Public()) {
		t.Fatal("generated public key does not match private key")
	}
	for _, p := range []string{privPath, pubPath} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := st.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", filepath.Base(p), mode)
		}
	}
	dirInfo, err := os.Stat(filepath.Dir(privPath))
	if err != nil {
		t.Fatal(err)
	}
	if mode := dirInfo.Mode().Perm(); mode != 0o700 {
		t.Errorf("key directory has mode %o, want 700", mode)
	}
	entries, err := os.ReadDir(filepath.Dir(privPath))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != ".keys.lock" { // the lock that serialises concurrent starts stays
			names = append(names, e.Name())
		}
	}
	if len(names) != 2 {
		t.Errorf("key directory holds %v; temporary files were left behind", names)
	}

	priv2, pub2, err := LoadOrCreateKeys(privPath, pubPath)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !priv2.Equal(priv) || !pub2.Equal(pub) {
		t.Fatal("loaded keys differ from the ones created")
	}

	// The loaded pair must actually work together, not just compare equal.
	msg := []byte("ledger")
	if !ed25519.Verify(pub2, msg, ed25519.Sign(priv2, msg)) {
		t.Fatal("loaded pair cannot sign and verify")
	}
}

func TestLoadOrCreateKeysOneFileMissing(t *testing.T) {
	for _, missing := range []string{"signing", "verification"} {
		t.Run(missing, func(t *testing.T) {
			privPath, pubPath := keyPaths(t)
			if _, _, err := LoadOrCreateKeys(privPath, pubPath); err != nil {
				t.Fatal(err)
			}
			gone := privPath
			if missing == "verification" {
				gone = pubPath
			}
			if err := os.Remove(gone); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreateKeys(privPath, pubPath)
			if err == nil {
				t.Fatal("LoadOrCreateKeys succeeded with one file missing")
			}
			if !strings.Contains(err.Error(), missing+" key "+gone) || !strings.Contains(err.Error(), "missing") {
				t.Fatalf("error %q does not name the missing %s key %s", err, missing, gone)
			}
			if _, statErr := os.Stat(gone); statErr == nil {
				t.Fatal("the missing file was silently regenerated")
			}
		})
	}
}

func TestLoadOrCreateKeysMismatchedPair(t *testing.T) {
	privA, _ := keyPaths(t)
	_, pubB := keyPaths(t)
	if _, _, err := LoadOrCreateKeys(privA, filepath.Join(filepath.Dir(privA), "a.pub")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKeys(filepath.Join(filepath.Dir(pubB), "b.key"), pubB); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateKeys(privA, pubB)
	if err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("mismatched pair: err = %v, want a mismatch error", err)
	}
}

func TestLoadOrCreateKeysInvalidFiles(t *testing.T) {
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(otherPriv)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})

	cases := []struct {
		name     string
		corrupt  string // which file to overwrite: "priv" or "pub"
		contents []byte
		want     string
	}{
		{"garbage private", "priv", []byte("this is not a key\n"), "no PEM block"},
		{"garbage public", "pub", []byte("this is not a key\n"), "no PEM block"},
		{"private PEM with bad DER", "priv", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}), "PKCS#8"},
		{"public PEM with bad DER", "pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}), "PKIX"},
		{"private key in public file", "pub", privPEM, `PEM type "PRIVATE KEY"`},
		{"trailing data", "priv", append(append([]byte{}, privPEM...), privPEM...), "unexpected data"},
		{"empty private", "priv", nil, "no PEM block"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			privPath, pubPath := keyPaths(t)
			if _, _, err := LoadOrCreateKeys(privPath, pubPath); err != nil {
				t.Fatal(err)
			}
			target := privPath
			if tc.corrupt == "pub" {
				target = pubPath
			}
			if err := os.WriteFile(target, tc.contents, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreateKeys(privPath, pubPath)
			if err == nil {
				t.Fatal("LoadOrCreateKeys accepted an invalid key file")
			}
			if !strings.Contains(err.Error(), target) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q should name %s and mention %q", err, target, tc.want)
			}
		})
	}
}

func TestLoadOrCreateKeysUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root can read files regardless of mode")
	}
	privPath, pubPath := keyPaths(t)
	if _, _, err := LoadOrCreateKeys(privPath, pubPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(privPath, 0); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateKeys(privPath, pubPath)
	if err == nil || !strings.Contains(err.Error(), privPath) {
		t.Fatalf("unreadable key: err = %v, want an error naming %s", err, privPath)
	}
}

// Replicas starting at once on one key directory end up with one pair, not one each.
func TestLoadOrCreateKeysConcurrentStarts(t *testing.T) {
	dir := t.TempDir()
	signing, verification := filepath.Join(dir, "keys", "signing.pem"), filepath.Join(dir, "keys", "verification.pem")
	const starts = 16
	pubs := make([]ed25519.PublicKey, starts)
	errs := make([]error, starts)
	var wg sync.WaitGroup
	for i := range starts {
		wg.Go(func() { _, pubs[i], errs[i] = LoadOrCreateKeys(signing, verification) })
	}
	wg.Wait()
	for i := range starts {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if !pubs[i].Equal(pubs[0]) {
			t.Fatalf("start %d got another key pair than start 0", i)
		}
	}
	_, pub, err := LoadOrCreateKeys(signing, verification)
	if err != nil || !pub.Equal(pubs[0]) {
		t.Fatalf("the files hold another pair than the one handed out: %v", err)
	}
}
