package mappers

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// Store serves the current mapping of one file and replaces it when the file changes. The
// switch is atomic: a render sees the old mapping or the new one, never a mix, and an invalid
// file never replaces a good one.
type Store struct {
	path     string
	log      *slog.Logger
	debounce time.Duration
	onReload func(Reload)
	metrics  *storeMetrics

	cur atomic.Pointer[Mapping]

	mu           sync.Mutex // serialises reloads
	lastRejected [32]byte   // hash of the last rejected content, so it is reported once
}

// StoreOptions configures a Store. The zero value works: no metrics, slog.Default, 100 ms
// debounce.
type StoreOptions struct {
	Logger *slog.Logger
	// Registerer receives mcs_mapping_reloads_total{file,result} and
	// mcs_mapping_file_valid{file}. Several stores may share one registerer.
	Registerer prometheus.Registerer
	// Debounce groups the several events of one save (truncate, write, chmod) into one
	// reload. Zero means 100 ms.
	Debounce time.Duration
	// OnReload is called after every reload that applied a new mapping or rejected a file
	// (not when the content did not change). Tests synchronise on it.
	OnReload func(Reload)
}

// Reload is the outcome of looking at the file again.
type Reload struct {
	Path    string
	Applied bool   // a new mapping is now current
	Version string // the version now current
	Err     error  // why the file was rejected (an ErrorList, or the read error)
}

// Reload results, the values of the metric's result label.
const (
	reloadApplied    = "applied"
	reloadInvalid    = "invalid"
	reloadUnreadable = "unreadable"
)

type storeMetrics struct {
	reloads *prometheus.CounterVec
	valid   *prometheus.GaugeVec
}

// register registers c, or returns the collector already registered under the same
// description, so every Store of a process can count into the same metric.
func register[C prometheus.Collector](r prometheus.Registerer, c C) (C, error) {
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func newStoreMetrics(r prometheus.Registerer) (*storeMetrics, error) {
	reloads, err := register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mcs_mapping_reloads_total",
		Help: "Mapping file reloads by result: applied, invalid (rejected, the last good mapping keeps serving) or unreadable.",
	}, []string{"file", "result"}))
	if err != nil {
		return nil, fmt.Errorf("mappers: register metrics: %w", err)
	}
	valid, err := register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mcs_mapping_file_valid",
		Help: "1 when the mapping file on disk is the one serving, 0 while a changed file is rejected.",
	}, []string{"file"}))
	if err != nil {
		return nil, fmt.Errorf("mappers: register metrics: %w", err)
	}
	return &storeMetrics{reloads: reloads, valid: valid}, nil
}

// NewStore loads the mapping at path. An invalid or unreadable file is an error: a process
// must not start without a mapping.
func NewStore(path string, opts StoreOptions) (*Store, error) {
	s := &Store{path: path, log: opts.Logger, debounce: opts.Debounce, onReload: opts.OnReload}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.debounce <= 0 {
		s.debounce = 100 * time.Millisecond
	}
	if opts.Registerer != nil {
		m, err := newStoreMetrics(opts.Registerer)
		if err != nil {
			return nil, err
		}
		s.metrics = m
	}
	m, err := Load(path)
	if err != nil {
		return nil, err
	}
	s.cur.Store(m)
	if s.metrics != nil {
		s.metrics.valid.WithLabelValues(path).Set(1)
	}
	return s, nil
}

// Current is the mapping to render with. Safe for concurrent use; never nil.
func (s *Store) Current() *Mapping { return s.cur.Load() }

// Path is the watched file.
func (s *Store) Path() string { return s.path }

// Run watches the file until ctx is done and reloads it when it changes. It watches the
// file's directory, not the file: editors replace files by rename and Kubernetes updates a
// ConfigMap volume by swapping the ..data symlink, and neither is an event on the old inode.
func (s *Store) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("mappers: watch %s: %w", s.path, err)
	}
	defer w.Close()
	dirs := map[string]bool{filepath.Dir(s.path): true}
	if real, err := filepath.EvalSymlinks(s.path); err == nil {
		dirs[filepath.Dir(real)] = true // a symlink into another directory: watch the target's too
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("mappers: watch %s: %w", d, err)
		}
	}
	// The file may have changed between NewStore and the watch.
	s.Reload()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("mappers: watch %s: watcher closed", s.path)
			}
			// Any change in the directory may be ours (a rename onto the file, a ..data
			// swap); Reload compares contents, so unrelated events cost one read.
			timer.Reset(s.debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("mappers: watch %s: watcher closed", s.path)
			}
			s.log.Warn("mapping watch error", "file", s.path, "err", err)
			timer.Reset(s.debounce) // events may have been lost: look again
		case <-timer.C:
			s.Reload()
		}
	}
}

// Reload reads the file now and switches to it when it changed and is valid. Run calls it on
// file events; a process may also call it (e.g. on SIGHUP).
func (s *Store) Reload() Reload {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := Reload{Path: s.path, Version: s.Current().Version()}
	src, err := os.ReadFile(s.path)
	if err != nil {
		// Mid-swap, or deleted: keep serving and say so once per failure.
		res.Err = fmt.Errorf("mappers: %w", err)
		s.log.Warn("mapping file unreadable; the last good mapping keeps serving",
			"file", s.path, "version", res.Version, "err", err)
		s.count(reloadUnreadable, 0)
		s.notify(res)
		return res
	}
	sum := sha256.Sum256(src)
	if versionOf(sum) == res.Version {
		// Unchanged (or back to what serves after a rejected edit): nothing to report.
		s.lastRejected = [32]byte{}
		if s.metrics != nil {
			s.metrics.valid.WithLabelValues(s.path).Set(1)
		}
		return res
	}
	if sum == s.lastRejected {
		return res // already reported
	}
	m, err := Parse(s.path, src)
	if err != nil {
		s.lastRejected = sum
		res.Err = err
		s.log.Error("mapping file rejected; the last good mapping keeps serving",
			"file", s.path, "version", res.Version, "errors", len(Errors(err)), "err", err)
		s.count(reloadInvalid, 0)
		s.notify(res)
		return res
	}
	s.lastRejected = [32]byte{}
	old := s.cur.Swap(m)
	res.Applied, res.Version = true, m.Version()
	s.log.Info("mapping reloaded", "file", s.path, "version", m.Version(), "previous_version", old.Version())
	s.count(reloadApplied, 1)
	s.notify(res)
	return res
}

func (s *Store) count(result string, valid float64) {
	if s.metrics == nil {
		return
	}
	s.metrics.reloads.WithLabelValues(s.path, result).Inc()
	s.metrics.valid.WithLabelValues(s.path).Set(valid)
}

func (s *Store) notify(r Reload) {
	if s.onReload != nil {
		s.onReload(r)
	}
}
