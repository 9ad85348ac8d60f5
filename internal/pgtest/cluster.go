package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/migrations"
)

// Cluster is a PostgreSQL server of a test's own, in a temporary directory and on a free port,
// which the test may stop, start and reconfigure at will: a primary, or a hot standby of one.
// The machine's PostgreSQL binaries (pg_config --bindir, else /usr/lib/postgresql/N/bin) run it, as the postgres user when the
// test runs as root. Any other server is left alone.
type Cluster struct {
	t    testing.TB
	Bin  string
	Dir  string
	Port int

	asOwner func(name string, args ...string) *exec.Cmd
}

// StartCluster creates and starts a throwaway cluster that standbys can replicate from
// (PostgreSQL's defaults allow it: WAL level replica, WAL senders, replication connections
// from 127.0.0.1), or skips the test when there are no binaries or no user to run them as.
// The cluster is stopped when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := newCluster(t)
	if out, err := c.asOwner(filepath.Join(c.Bin, "initdb"), "-D", c.Dir, "-U", "postgres", "-A", "trust", "-E", "UTF8").CombinedOutput(); err != nil {
		t.Skipf("initdb: %v\n%s", err, out)
	}
	c.Start()
	t.Cleanup(func() { _ = c.ctl("stop", "-m", "immediate").Run() })
	return c
}

// StartStandby makes a hot standby of c with pg_basebackup -R (streaming replication from c)
// and starts it; it is stopped when the test ends.
func (c *Cluster) StartStandby(t testing.TB) *Cluster {
	t.Helper()
	s := newCluster(t)
	if out, err := s.asOwner(filepath.Join(s.Bin, "pg_basebackup"), "-D", s.Dir, "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port),
		"-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast").CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	s.Start()
	t.Cleanup(func() { _ = s.ctl("stop", "-m", "immediate").Run() })
	return s
}

func newCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := binDir()
	if bin == "" {
		t.Skip("no PostgreSQL server binaries (pg_config --bindir, /usr/lib/postgresql/*/bin)")
	}
	c := &Cluster{t: t, Bin: bin, asOwner: exec.Command}
	base := t.TempDir()
	if os.Geteuid() == 0 { // PostgreSQL refuses to run as root
		if _, err := user.Lookup("postgres"); err != nil {
			t.Skip("running as root without a postgres user to run a cluster as")
		}
		c.asOwner = func(name string, args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
		}
		if err := os.Chmod(base, 0o777); err != nil {
			t.Fatal(err)
		}
		// The temporary directory's parents must be traversable by the postgres user.
		for d := filepath.Dir(base); d != "/" && d != "."; d = filepath.Dir(d) {
			_ = os.Chmod(d, 0o755)
		}
	}
	c.Dir = filepath.Join(base, "pg")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	return c
}

// binDir finds the server binaries as make test's throwaway cluster does (.ci/postgres.sh):
// pg_config's, else the newest Debian-style installation.
func binDir() string {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if d := strings.TrimSpace(string(out)); fileExists(filepath.Join(d, "pg_basebackup")) {
			return d
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return version(b) - version(a) })
	for _, d := range dirs {
		if fileExists(filepath.Join(d, "initdb")) {
			return d
		}
	}
	return ""
}

func version(bin string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return n
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func (c *Cluster) ctl(args ...string) *exec.Cmd {
	return c.asOwner(filepath.Join(c.Bin, "pg_ctl"), append([]string{"-D", c.Dir}, args...)...)
}

// Start starts the server (again) and waits until it takes connections.
func (c *Cluster) Start() {
	c.t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1", c.Port, c.Dir)
	if out, err := c.ctl("-w", "-t", "60", "-l", filepath.Join(c.Dir, "log"), "-o", opts, "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.Dir, "log"))
		c.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the server at once: sessions are cut, as when a database fails.
func (c *Cluster) Stop() {
	c.t.Helper()
	if out, err := c.ctl("-w", "-m", "immediate", "stop").CombinedOutput(); err != nil {
		c.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

// URL is the URL of the database named db on the server.
func (c *Cluster) URL(db string) string {
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(c.Port) + "/" + db + "?sslmode=disable"
}

// Exec runs sql on the server's postgres database, outside any transaction (ALTER SYSTEM,
// pg_reload_conf(), pg_wal_replay_pause()).
func (c *Cluster) Exec(sql string, args ...any) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		c.t.Fatalf("connect to %s: %v", c.URL("postgres"), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		c.t.Fatalf("%s: %v", sql, err)
	}
}

// Set changes a setting with ALTER SYSTEM and reloads the configuration.
func (c *Cluster) Set(name, value string) {
	c.t.Helper()
	c.Exec("ALTER SYSTEM SET " + pgx.Identifier{name}.Sanitize() + " = '" + strings.ReplaceAll(value, "'", "''") + "'")
	c.Exec("SELECT pg_reload_conf()")
}

// CreateDatabase creates a migrated database named name and returns its URL.
func (c *Cluster) CreateDatabase(name string) string {
	c.t.Helper()
	c.Exec("CREATE DATABASE " + pgx.Identifier{name}.Sanitize())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := migrations.Apply(ctx, c.URL(name)); err != nil {
		c.t.Fatalf("migrate %s: %v", name, err)
	}
	return c.URL(name)
}

// WaitReplayed waits until standby s has replayed everything primary c has flushed.
func (c *Cluster) WaitReplayed(s *Cluster) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer p.Close(ctx)
	var target string
	if err := p.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&target); err != nil {
		c.t.Fatal(err)
	}
	for {
		sc, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			var done bool
			err = sc.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn`, target).Scan(&done)
			sc.Close(ctx)
			if err == nil && done {
				return
			}
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("standby did not replay %s: %v", target, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
