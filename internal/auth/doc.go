// Package auth holds the ledger's credential primitives: argon2id password
// hashing run under a bounded worker pool so a burst of logins cannot starve
// the rest of the service, Ed25519 key material persisted once and reused
// across restarts so issued sessions survive a redeploy, and short-lived
// EdDSA-signed JWTs whose verification pins the algorithm to our own key and
// keeps a small bounded cache so hot tokens skip the signature check.
package auth
