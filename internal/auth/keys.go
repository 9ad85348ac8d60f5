package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

const (
	pemPrivateKey = "PRIVATE KEY"
	pemPublicKey  = "PUBLIC KEY"
)

// LoadOrCreateKeys returns the Ed25519 key pair used to sign and verify
// session tokens. Existing files are loaded and checked against each other;
// when neither exists a new pair is generated and written with owner-only
// permissions, so a fresh deployment needs no manual key ceremony while an
// existing one keeps honouring the tokens it already issued. Exactly one file
// being present is an error rather than a regeneration, because silently
// replacing half a pair would invalidate every outstanding session or, worse,
// pair a leaked key with a new one.
//
// Processes sharing the key directory (replicas on one volume) take a file lock around the
// check and the creation, so the first creates the pair and the others load it.
func LoadOrCreateKeys(signingKeyFile, verificationKeyFile string) (ed25519.PrivateKey, ed25519.PublicKey, error) {
	unlock, err := lockKeyDir(filepath.Dir(signingKeyFile))
	if err != nil {
		return nil, nil, err
	}
	defer unlock()
	privExists, err := fileExists(signingKeyFile)
	if err != nil {
		return nil, nil, err
	}
	pubExists, err := fileExists(verificationKeyFile)
	if err != nil {
		return nil, nil, err
	}

	switch {
	case privExists && pubExists:
		return loadKeys(signingKeyFile, verificationKeyFile)
	case !privExists && !pubExists:
		return createKeys(signingKeyFile, verificationKeyFile)
	case privExists:
		return nil, nil, fmt.Errorf("auth: signing key %s exists but verification key %s is missing; restore it or remove both to generate a new pair", signingKeyFile, verificationKeyFile)
	default:
		return nil, nil, fmt.Errorf("auth: verification key %s exists but signing key %s is missing; restore it or remove both to generate a new pair", verificationKeyFile, signingKeyFile)
	}
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("auth: checking key file %s: %w", path, err)
	}
}

// ErrKeyFileMissing is a key file that does not exist.
var ErrKeyFileMissing = errors.New("key file not found")

// LoadSigningKey returns the Ed25519 private key in signingKeyFile and never creates one: tools
// that mint tokens for a running service must use its key, and a new key would mint tokens it
// refuses. A missing file is ErrKeyFileMissing, naming the file.
func LoadSigningKey(signingKeyFile string) (ed25519.PrivateKey, error) {
	exists, err := fileExists(signingKeyFile)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("auth: signing key %s: %w", signingKeyFile, ErrKeyFileMissing)
	}
	return loadPrivateKey(signingKeyFile)
}

func loadPrivateKey(signingKeyFile string) (ed25519.PrivateKey, error) {
	der, err := readPEM(signingKeyFile, pemPrivateKey)
	if err != nil {
		return nil, err
	}
	parsedPriv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("auth: signing key %s: parsing PKCS#8: %w", signingKeyFile, err)
	}
	priv, ok := parsedPriv.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auth: signing key %s: want an Ed25519 key, got %T", signingKeyFile, parsedPriv)
	}
	return priv, nil
}

func loadKeys(signingKeyFile, verificationKeyFile string) (ed25519.PrivateKey, ed25519.PublicKey, error) {
	priv, err := loadPrivateKey(signingKeyFile)
	if err != nil {
		return nil, nil, err
	}

	der, err := readPEM(verificationKeyFile, pemPublicKey)
	if err != nil {
		return nil, nil, err
	}
	parsedPub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: verification key %s: parsing PKIX: %w", verificationKeyFile, err)
	}
	pub, ok := parsedPub.(ed25519.PublicKey)
	if !ok {
		return nil, nil, fmt.Errorf("auth: verification key %s: want an Ed25519 key, got %T", verificationKeyFile, parsedPub)
	}

	// A mismatched pair would make every token we issue fail verification
	// (or verify tokens someone else signed), so refuse to start instead.
	derived, ok := priv.Public().(ed25519.PublicKey)
	if !ok || !derived.Equal(pub) {
		return nil, nil, fmt.Errorf("auth: verification key %s does not belong to signing key %s", verificationKeyFile, signingKeyFile)
	}
	return priv, pub, nil
}

// readPEM insists on a single block of the expected type so that a file
// holding the wrong key, or extra material appended to it, is reported
// instead of half-used.
func readPEM(path, wantType string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: reading key file %s: %w", path, err)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("auth: key file %s: no PEM block found", path)
	}
	if block.Type != wantType {
		return nil, fmt.Errorf("auth: key file %s: PEM type %q, want %q", path, block.Type, wantType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("auth: key file %s: unexpected data after PEM block", path)
	}
	return block.Bytes, nil
}

func createKeys(signingKeyFile, verificationKeyFile string) (ed25519.PrivateKey, ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: generating Ed25519 key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: encoding signing key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: encoding verification key: %w", err)
	}

	// The private key goes first: if we crash in between, the next start
	// reports the missing public half instead of running with a public key
	// whose private counterpart was never persisted.
	if err := writeFileAtomic(signingKeyFile, pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: privDER})); err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(verificationKeyFile, pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: pubDER})); err != nil {
		return nil, nil, err
	}
	return priv, pub, nil
}

// writeFileAtomic writes via a temporary file in the destination directory
// and renames it into place, so readers never observe a truncated key even if
// the process dies mid-write.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("auth: creating key directory %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("auth: creating temporary file for %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmpName)
		}
	}()

	// CreateTemp already uses 0600; chmod anyway so the guarantee does not
	// depend on a standard-library implementation detail.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("auth: restricting permissions on %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("auth: writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("auth: syncing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("auth: closing %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("auth: installing %s: %w", path, err)
	}
	// Persist the rename itself; best effort because not every platform
	// lets a directory be opened and synced.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
