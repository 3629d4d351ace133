package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// A part that cannot be built (here the worker: its route's mapping file is missing) fails
// the start with exit 2 and leaves nothing running: the receiver, built first, never
// listened, so its port is free for the next attempt.
func TestServeBuildFailureLeavesNothingRunning(t *testing.T) {
	addr := freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf("server: {listen: %q}\nroutes: [{name: sales, mapping: /no/such/mapping.yaml, auth: {insecure: true}}]\n", addr))
	code, _, stderr := runCLI(t, nil, "serve", "--config", cfg)
	if code != exitUsage || !strings.Contains(stderr, "mapping.yaml") {
		t.Fatalf("exit %d, want 2 naming the mapping file; stderr:\n%s", code, stderr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the receiver's port is still taken after the failed start: %v", err)
	}
	ln.Close()
}
