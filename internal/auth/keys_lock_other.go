//go:build !unix

package auth

// lockKeyDir does nothing where advisory file locks are not available: processes sharing a
// key directory there must not start for the first time at the same moment.
func lockKeyDir(string) (func(), error) { return func() {}, nil }
