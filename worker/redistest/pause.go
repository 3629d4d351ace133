package redistest

import "syscall"

// Pause stops the server's process (SIGSTOP) without closing its connections: to its
// master it is a replica still connected that no longer acknowledges anything, what a
// replica stalled on a slow disk or a long fork looks like. Resume continues it. Pause on
// a stopped server is a no-op.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Errorf("redistest: signal %v: %v", sig, err)
	}
}
