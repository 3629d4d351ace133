package worker

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/miitel-crm-sync/miitel-crm-sync/config"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/admin"
	"github.com/miitel-crm-sync/miitel-crm-sync/worker/redistest"
)

// The kubelet restarts a worker whose /healthz fails and stops counting on one whose /readyz
// fails: a Redis outage must fail readiness only.
func TestOpsProbesAndMetrics(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "mcs_test_total", Help: "t"}))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	checks := func() any { return []map[string]string{{"connection": "hs", "check": "token", "status": "fail"}} }
	h := mustOps(t, OpsOptions{Addr: "127.0.0.1:0", Redis: srv.Client(), Gatherer: reg, ShutdownTimeout: time.Second, Logger: log, Checks: checks}).Handler()

	get := func(path string) (int, string) {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code, w.Body.String()
	}
	tests := []struct {
		path     string
		redis    bool
		wantCode int
		wantBody string
	}{
		{"/healthz", true, http.StatusOK, "ok"},
		// A failed connection check is detail, not unreadiness: readiness is Redis's alone.
		{"/readyz", true, http.StatusOK, `{"status":"ready","checks":[{"check":"token","connection":"hs","status":"fail"}]}`},
		{"/metrics", true, http.StatusOK, "mcs_test_total 0"},
		{"/healthz", false, http.StatusOK, "ok"},
		{"/readyz", false, http.StatusServiceUnavailable, `{"status":"unavailable","error":"redis unreachable","checks":[`},
		// No admin credential configured: 401 saying why, not a bare 404.
		{"/admin/calls/x", false, http.StatusUnauthorized, `"code":"no_admin_credentials"`},
		{"/admin/queues/", false, http.StatusUnauthorized, "add admin.tokens or admin.basic"},
	}
	for _, tt := range tests { // in order: Redis is stopped before the first case without it
		if !tt.redis {
			srv.Stop()
		}
		code, body := get(tt.path)
		if code != tt.wantCode || !strings.Contains(body, tt.wantBody) {
			t.Errorf("GET %s (redis up: %v) = %d %q, want %d containing %q", tt.path, tt.redis, code, body, tt.wantCode, tt.wantBody)
		}
	}
}

func TestOpsRunStopsWithItsContext(t *testing.T) {
	t.Parallel()
	o := mustOps(t, OpsOptions{Addr: "127.0.0.1:0", Redis: redistest.Start(t).Client(), Gatherer: prometheus.NewRegistry(), ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after the context ends", err)
	}
}

func TestOpsRunReportsABusyAddress(t *testing.T) {
	t.Parallel()
	taken := httptest.NewServer(http.NotFoundHandler())
	defer taken.Close()
	o := mustOps(t, OpsOptions{Addr: taken.Listener.Addr().String(), Redis: redistest.Start(t).Client(), Gatherer: prometheus.NewRegistry(), ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err := o.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "worker: ops") {
		t.Errorf("Run on a busy address = %v, want a worker: ops error", err)
	}
}

// Without a connection check (none configured), /readyz is the plain JSON status.
func TestOpsReadyzWithoutChecks(t *testing.T) {
	t.Parallel()
	h := mustOps(t, OpsOptions{Addr: "127.0.0.1:0", Redis: redistest.Start(t).Client(), Gatherer: prometheus.NewRegistry(), ShutdownTimeout: time.Second}).Handler()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != `{"status":"ready"}` || w.Header().Get("Content-Type") != "application/json; charset=utf-8" {
		t.Errorf("GET /readyz = %d %q (%s)", w.Code, w.Body.String(), w.Header().Get("Content-Type"))
	}
}

// The ops listener composes probes, metrics, the admin API and pprof: /metrics and pprof
// behind the admin credentials when asked, the probes always open for the kubelet.
func TestOpsWithAdmin(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "mcs_test_total", Help: "t"}))
	adm, err := admin.New(admin.Options{Auth: config.Admin{Tokens: []config.AdminToken{
		{Token: config.FromValue("ro"), Role: config.RoleReadOnly}, {Token: config.FromValue("rw"), Role: config.RoleReadWrite}}}})
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOps(OpsOptions{Addr: "127.0.0.1:0", Redis: srv.Client(), Gatherer: reg, ShutdownTimeout: time.Second,
		Admin: adm, MetricsAuth: true, Pprof: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(o.Handler())
	defer hs.Close()
	for _, tt := range []struct {
		path, token string
		want        int
	}{
		{"/healthz", "", 200},
		{"/readyz", "", 200},
		{"/metrics", "", 401},
		{"/metrics", "ro", 200},
		{"/admin/deadletter", "", 401},
		{"/admin/deadletter", "ro", 503}, // authenticated; no dead letter configured in this test
		{"/debug/pprof/", "ro", 403},
		{"/debug/pprof/", "rw", 200},
	} {
		req, _ := http.NewRequest("GET", hs.URL+tt.path, nil)
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tt.want {
			t.Errorf("GET %s (token %q) = %d, want %d", tt.path, tt.token, res.StatusCode, tt.want)
		}
	}
	if _, err := NewOps(OpsOptions{Addr: ":0", Redis: srv.Client(), Gatherer: reg, Pprof: true}); err == nil {
		t.Error("pprof without admin credentials must be refused")
	}
}

func mustOps(t testing.TB, o OpsOptions) *Ops {
	t.Helper()
	ops, err := NewOps(o)
	if err != nil {
		t.Fatal(err)
	}
	return ops
}
