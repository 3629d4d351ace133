// Package redistest starts private redis-server processes for tests: real Redis, on a free
// loopback port, with no persistence, that a test may stop, restart or break without touching
// the shared Redis other packages use at the same time.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one private redis-server.
type Server struct {
	t    testing.TB
	port int
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start launches a redis-server on a free port and stops it when the test ends. extra are
// additional redis-server arguments (e.g. "--requirepass", "secret"). The test fails with a
// clear message when redis-server is not installed: these tests need real Redis.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redistest: redis-server is not installed (apt-get install redis-server): %v", err)
	}
	s := &Server{t: t, port: freePort(t)}
	s.args = append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir()}, extra...)
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Client returns a go-redis client for the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop kills the server (simulating a crash or an outage). Stop on a stopped server is a no-op.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart() {
	s.Stop()
	s.start()
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd := exec.Command("redis-server", s.args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	// Wait for the "Ready to accept connections" line rather than sleeping.
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			// A data node says it is ready; a Sentinel has no data to load and says which
			// master it monitors instead.
			if line := sc.Text(); strings.Contains(line, "Ready to accept connections") || strings.Contains(line, "+monitor master") {
				ready <- nil
				// Keep draining so redis-server never blocks on a full pipe.
				for sc.Scan() {
				}
				return
			}
		}
		ready <- fmt.Errorf("redis-server exited before it was ready")
	}()
	select {
	case err := <-ready:
		if err != nil {
			s.t.Fatalf("redistest: %v", err)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		s.t.Fatalf("redistest: redis-server on port %d not ready after 20s", s.port)
	}
	s.cmd = cmd
	// One PING proves the port answers before the test uses it.
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err != nil {
		s.t.Fatalf("redistest: ping: %v", err)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
