package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/ledger/ledger/httpapi"
)

// layout is what every page shows around its content.
type layout struct {
	Title  string
	Nav    string
	Viewer *viewer
	Page   any
}

var funcs = template.FuncMap{
	"account": accountPath,
	"add":     func(a, b int) int { return a + b },
	"query":   url.QueryEscape,
	"time": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05.000Z")
	},
	"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"signed": func(n int64) string {
		if n > 0 {
			return "+" + strconv.FormatInt(n, 10)
		}
		return strconv.FormatInt(n, 10)
	},
	"pct": func(done, total int64) string {
		if total <= 0 {
			return "0"
		}
		return strconv.FormatInt(min(100, done*100/total), 10)
	},
}

// titles name each page for the browser's title bar and the navigation.
var titles = map[string]string{
	"signin": "Sign in", "error": "Error", "overview": "Overview", "accounts": "Accounts",
	"account": "Account", "log": "Log", "projections": "Projections", "verify": "Verify",
}

func (c *Console) parseTemplates() error {
	c.pages = make(map[string]*template.Template)
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return err
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		name := strings.TrimSuffix(path.Base(n), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return fmt.Errorf("console template %s: %w", n, err)
		}
		c.pages[name] = t
	}
	return nil
}

// render writes the named page with status code; the page is rendered in full before anything
// is sent, so a failure is still an error page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, name string, data any) {
	l := layout{Title: titles[name], Nav: name, Page: data}
	if v, ok := viewerOf(r); ok {
		l.Viewer = &v
	}
	var b bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&b, "layout.html", l); err != nil {
		c.Log.ErrorContext(r.Context(), "console template failed", "page", name, "err", err)
		if name != "error" {
			c.fail(w, r, errorf(http.StatusInternalServerError, "the console failed to show this page; the error is in the server's log"))
			return
		}
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = b.WriteTo(w)
}

// signInRefusal is the status and message of a refused sign-in.
func signInRefusal(err error) (int, string) {
	code, msg := httpapi.Status(err)
	if code == http.StatusUnauthorized {
		msg = "Wrong username or password."
	}
	return code, msg
}

// isTooMany returns the Retry-After of a refusal by the login limits.
func isTooMany(err error) (string, bool) {
	wait, ok := httpapi.IsTooManyAttempts(err)
	return strconv.Itoa(max(1, int(wait.Seconds()))), ok
}

func formatInt(n int64) string { return strconv.FormatInt(n, 10) }
