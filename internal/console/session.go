package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
)

// Cookies: the session's, and the one a sign-in form's token is checked against before there
// is a session (double submit).
const (
	sessionCookie = "ledger_console"
	signInCookie  = "ledger_console_signin"
	// maxFormBytes bounds a form's body: the console's forms are a few fields.
	maxFormBytes = 16 << 10
)

type ctxKey int

const keyViewer ctxKey = iota

// viewer is who is signed in, with the roles they have now (read from the database on each
// request, as the API reads them).
type viewer struct {
	session app.Session
	roles   auth.Roles
}

func (v viewer) Username() string { return v.session.Username }
func (v viewer) CSRF() string     { return v.session.CSRFToken }
func (v viewer) IsAdmin() bool    { return v.roles.HasAny(auth.RoleAdmin) }
func (v viewer) IsAuditor() bool  { return v.roles.HasAny(auth.RoleAuditor) }

// Reader is true for those who may read everything: auditors and admins.
func (v viewer) Reader() bool { return v.roles.HasAny(auth.RoleAuditor, auth.RoleAdmin) }

func viewerOf(r *http.Request) (viewer, bool) {
	v, ok := r.Context().Value(keyViewer).(viewer)
	return v, ok
}

// secure reports whether the request came over TLS, directly or through a proxy that says so:
// the session cookie is then Secure.
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// session admits requests of a live session, reads the viewer's roles, and checks the CSRF
// token of every request that changes something. Without a session, a page read is sent to
// sign in; anything else is refused.
func (c *Console) session(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s app.Session
		var err error
		if ck, cerr := r.Cookie(sessionCookie); cerr == nil && ck.Value != "" && len(ck.Value) <= 256 {
			s, err = c.Ledger.SessionOf(r.Context(), ck.Value)
		} else {
			err = app.ErrNoSession
		}
		if errors.Is(err, app.ErrNoSession) {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/events") && !strings.HasSuffix(r.URL.Path, "/tail") {
				http.Redirect(w, r, Prefix+"/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, errorf(http.StatusUnauthorized, "your session has ended: sign in again"))
			return
		}
		if err != nil {
			c.fail(w, r, err)
			return
		}
		roles, err := c.Ledger.Roles(r.Context(), s.Username)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := parseForm(w, r); err != nil {
				c.fail(w, r, err)
				return
			}
			if !sameToken(r.PostForm.Get("csrf"), s.CSRFToken) {
				c.fail(w, r, errorf(http.StatusForbidden, "this form's security token is missing or out of date: reload the page and try again"))
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyViewer, viewer{session: s, roles: roles})))
	})
}

func parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return errorf(http.StatusBadRequest, "the form could not be read: send at most %d bytes of application/x-www-form-urlencoded", maxFormBytes)
	}
	return nil
}

func sameToken(got, want string) bool {
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// only lets through viewers with one of roles; others see a 403 page.
func (c *Console) only(h handler, roles ...auth.Role) http.HandlerFunc {
	return c.page(func(w http.ResponseWriter, r *http.Request) error {
		v, ok := viewerOf(r)
		if !ok || !v.roles.HasAny(roles...) {
			names := make([]string, len(roles))
			for i, role := range roles {
				names[i] = string(role)
			}
			return errorf(http.StatusForbidden, "this page needs the %s role", strings.Join(names, " or "))
		}
		return h(w, r)
	})
}

type signInPage struct {
	Token, Next, Username, Message string
}

// signInToken returns the sign-in form's token, setting its cookie when there is none yet.
func signInToken(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(signInCookie); err == nil && len(ck.Value) >= 26 && len(ck.Value) <= 64 {
		return ck.Value
	}
	t := rand.Text()
	http.SetCookie(w, &http.Cookie{Name: signInCookie, Value: t, Path: Prefix + "/signin", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secure(r), MaxAge: 3600})
	return t
}

// safeNext keeps a redirect after sign-in on the console.
func safeNext(next string) string {
	if strings.HasPrefix(next, Prefix+"/") && !strings.HasPrefix(next, "//") && !strings.ContainsAny(next, "\\\r\n") {
		return next
	}
	return ""
}

func (c *Console) handleSignInForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "signin", signInPage{Token: signInToken(w, r), Next: safeNext(r.URL.Query().Get("next"))})
}

func (c *Console) handleSignIn(w http.ResponseWriter, r *http.Request) error {
	if err := parseForm(w, r); err != nil {
		return err
	}
	page := signInPage{Token: signInToken(w, r), Next: safeNext(r.PostForm.Get("next")), Username: r.PostForm.Get("username")}
	ck, err := r.Cookie(signInCookie)
	if err != nil || !sameToken(r.PostForm.Get("csrf"), ck.Value) {
		page.Message = "This form's security token is missing or out of date: try again."
		c.render(w, r, http.StatusForbidden, "signin", page)
		return nil
	}
	name, err := c.SignIn(r, page.Username, r.PostForm.Get("password"))
	if err != nil {
		code, msg := signInRefusal(err)
		if code >= 500 {
			return err
		}
		if wait, ok := isTooMany(err); ok {
			w.Header().Set("Retry-After", wait)
		}
		page.Message = msg
		c.render(w, r, code, "signin", page)
		return nil
	}
	s, err := c.Ledger.CreateSession(r.Context(), name, c.SessionTTL)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.Token, Path: Prefix, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secure(r), Expires: s.Expires})
	// Employees land on their own account: the overview, where a bare visit to the console
	// would take them, is not theirs to see.
	next := page.Next
	if next == "" || next == Prefix+"/" {
		next = Prefix + "/"
		if roles, err := c.Ledger.Roles(r.Context(), name); err == nil && !roles.HasAny(auth.RoleAuditor, auth.RoleAdmin) {
			next = accountPath(name)
		}
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (c *Console) handleSignOut(w http.ResponseWriter, r *http.Request) error {
	v, _ := viewerOf(r)
	if err := c.Ledger.EndSession(r.Context(), v.session.Token); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: Prefix, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: secure(r), MaxAge: -1})
	http.Redirect(w, r, Prefix+"/signin", http.StatusSeeOther)
	return nil
}

// accountPath is the page of the named account.
func accountPath(name string) string { return Prefix + "/accounts/" + url.PathEscape(name) }
