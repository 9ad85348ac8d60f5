// Package natstest runs throwaway NATS servers with JetStream for tests: each on a free port
// with its store in a temporary directory, stopped when the test ends, and stoppable and
// restartable in between (same port, same store), so that tests can take NATS away from the
// ledger and give it back. It needs the nats-server binary (Debian package nats-server).
package natstest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Server is one nats-server process with JetStream.
type Server struct {
	tb   testing.TB
	dir  string
	port int
	conf string
	// URL reaches the server (with the credentials of the configuration, if any are given
	// to Start in a URL of their own).
	URL string

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
}

// Start starts a server; config, when not empty, is a nats-server configuration fragment
// (authorization, accounts) added to the generated one.
func Start(tb testing.TB, config string) *Server {
	tb.Helper()
	if _, err := exec.LookPath("nats-server"); err != nil {
		tb.Fatal("natstest: no nats-server binary on PATH: install it (Debian package nats-server); .ci/run does")
	}
	dir := tb.TempDir()
	s := &Server{tb: tb, dir: dir, port: freePort(tb)}
	s.URL = "nats://127.0.0.1:" + strconv.Itoa(s.port)
	s.conf = filepath.Join(dir, "nats.conf")
	text := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 4GB }\n%s\n",
		s.port, filepath.Join(dir, "js"), config)
	if err := os.WriteFile(s.conf, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// freePort returns a port nothing listens on now.
func freePort(tb testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start starts the stopped server again, on the same port with the same store, and waits
// until it accepts connections.
func (s *Server) Start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "nats.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.tb.Fatal(err)
	}
	cmd := exec.Command("nats-server", "-c", s.conf)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		s.tb.Fatal(err)
	}
	s.cmd, s.log = cmd, log
	deadline := time.Now().Add(20 * time.Second) // a bound against a hang
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(s.dir, "nats.log"))
			s.tb.Fatalf("natstest: nats-server did not listen on %d: %v\n%s", s.port, err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop stops the server (SIGTERM, as an operator would) and waits for it to exit.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.log.Close()
	s.cmd, s.log = nil, nil
}

// Connect returns a connection to the server, closed when the test ends.
func (s *Server) Connect(opts ...nats.Option) *nats.Conn {
	s.tb.Helper()
	nc, err := nats.Connect(s.URL, opts...)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.tb.Cleanup(nc.Close)
	return nc
}

// Log returns what the server logged.
func (s *Server) Log() string {
	out, err := os.ReadFile(filepath.Join(s.dir, "nats.log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err.Error()
	}
	return string(out)
}
