package mappers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// mappingVariant is a valid mapping whose title differs, so each variant has its own version.
func mappingVariant(title string) string {
	return fmt.Sprintf("version: 1\ncrm: hubspot\nobject: calls\nexternal_id: {field: miitel_id}\nfields:\n  - name: hs_call_title\n    const: %q\n", title)
}

const brokenMapping = "version: 1\ncrm: hubspot\nobject: calls\nexternal_id: {field: miitel_id}\nfields:\n  - name: hs_call_title\n    value: no_such_thing\n"

// writeAtomic replaces path the way editors and config tools do: write aside, rename over.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// waitReload waits for the store's next reported reload.
func waitReload(t *testing.T, ch <-chan Reload) Reload {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no reload reported within 20s")
		return Reload{}
	}
}

// kubeDir lays out a directory like a Kubernetes ConfigMap volume: name -> ..data/name,
// ..data -> ..<timestamp>/. update swaps ..data atomically to a new timestamp directory.
type kubeDir struct {
	t   *testing.T
	dir string
	n   int
}

func (k *kubeDir) update(name, content string) {
	k.n++
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", k.n, k.n)
	if err := os.Mkdir(filepath.Join(k.dir, ts), 0o755); err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(k.dir, ts, name), []byte(content), 0o644); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Symlink(ts, filepath.Join(k.dir, "..data_tmp")); err != nil {
		k.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(k.dir, "..data_tmp"), filepath.Join(k.dir, "..data")); err != nil {
		k.t.Fatal(err)
	}
	link := filepath.Join(k.dir, name)
	if _, err := os.Lstat(link); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			k.t.Fatal(err)
		}
	}
}

// TestStoreHotReload renders continuously from many goroutines while the file is replaced by
// a bad version (must be rejected, the good one keeps serving), a good one (must switch), and
// a ConfigMap-style symlink swap. Run it with -race.
func TestStoreHotReload(t *testing.T) {
	for _, layout := range []string{"plain", "configmap"} {
		t.Run(layout, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "hubspot.yaml")
			k := &kubeDir{t: t, dir: dir}
			write := func(content string) {
				if layout == "plain" {
					writeAtomic(t, path, content)
				} else {
					k.update("hubspot.yaml", content)
				}
			}
			write(mappingVariant("v1"))

			reg := prometheus.NewRegistry()
			reloads := make(chan Reload, 16)
			s, err := NewStore(path, StoreOptions{
				Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
				Registerer: reg,
				Debounce:   time.Millisecond,
				OnReload:   func(r Reload) { reloads <- r },
			})
			if err != nil {
				t.Fatal(err)
			}
			v1 := s.Current().Version()
			good := map[string]string{v1: "v1"} // versions a render may see -> title
			var goodMu sync.RWMutex

			ctx, cancel := context.WithCancel(context.Background())
			runErr := make(chan error, 1)
			go func() { runErr <- s.Run(ctx) }()

			// Renderers: every render must succeed with a known good version, and its
			// record must be consistent with that version (never half of a mapping).
			var renders atomic.Int64
			var wg sync.WaitGroup
			failures := make(chan string, 8)
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ev := testEvent()
					for ctx.Err() == nil {
						m := s.Current()
						rec, _, err := m.Render(ev)
						goodMu.RLock()
						title, known := good[m.Version()]
						goodMu.RUnlock()
						switch {
						case err != nil:
							failures <- err.Error()
							return
						case !known:
							failures <- "served unknown version " + m.Version()
							return
						case rec.Fields[0].Value != title:
							failures <- fmt.Sprintf("version %s rendered title %v, want %s", m.Version(), rec.Fields[0].Value, title)
							return
						}
						renders.Add(1)
					}
				}()
			}

			// A broken file is rejected and counted; v1 keeps serving.
			write(brokenMapping)
			r := waitReload(t, reloads)
			if r.Applied || r.Err == nil || !strings.Contains(r.Err.Error(), "unknown name no_such_thing") {
				t.Fatalf("broken file: got %+v, want a rejection naming the error", r)
			}
			if got := s.Current().Version(); got != v1 {
				t.Fatalf("after a broken file the store serves %s, want %s", got, v1)
			}
			if got := testutil.ToFloat64(s.metrics.reloads.WithLabelValues(path, reloadInvalid)); got != 1 {
				t.Errorf("invalid reloads = %v, want 1", got)
			}
			if got := testutil.ToFloat64(s.metrics.valid.WithLabelValues(path)); got != 0 {
				t.Errorf("file_valid = %v, want 0", got)
			}

			// A good file replaces it.
			m2, err := Parse(path, []byte(mappingVariant("v2")))
			if err != nil {
				t.Fatal(err)
			}
			goodMu.Lock()
			good[m2.Version()] = "v2"
			goodMu.Unlock()
			write(mappingVariant("v2"))
			r = waitReload(t, reloads)
			if !r.Applied || r.Version != m2.Version() || s.Current().Version() != m2.Version() {
				t.Fatalf("good file: got %+v, current %s, want %s applied", r, s.Current().Version(), m2.Version())
			}
			if got := testutil.ToFloat64(s.metrics.reloads.WithLabelValues(path, reloadApplied)); got != 1 {
				t.Errorf("applied reloads = %v, want 1", got)
			}
			if got := testutil.ToFloat64(s.metrics.valid.WithLabelValues(path)); got != 1 {
				t.Errorf("file_valid = %v, want 1", got)
			}

			// Let the renderers see v2 before stopping them.
			for start := renders.Load(); renders.Load() < start+100; {
				select {
				case f := <-failures:
					t.Fatal(f)
				default:
				}
			}
			cancel()
			wg.Wait()
			close(failures)
			for f := range failures {
				t.Error(f)
			}
			if err := <-runErr; err != nil {
				t.Errorf("Run: %v", err)
			}
			select {
			case r := <-reloads:
				t.Errorf("unexpected extra reload %+v", r)
			default:
			}
		})
	}
}

func TestNewStoreRejectsInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.yaml")
	writeAtomic(t, path, brokenMapping)
	if _, err := NewStore(path, StoreOptions{}); err == nil || len(Errors(err)) != 1 {
		t.Fatalf("NewStore(broken) = %v, want the ErrorList", err)
	}
	if _, err := NewStore(filepath.Join(t.TempDir(), "missing.yaml"), StoreOptions{}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("NewStore(missing) = %v, want not-exist", err)
	}
}

// TestStoresShareMetrics: two stores (two routes) on one registry must not collide.
func TestStoresShareMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, name := range []string{"a.yaml", "b.yaml"} {
		path := filepath.Join(t.TempDir(), name)
		writeAtomic(t, path, mappingVariant(name))
		if _, err := NewStore(path, StoreOptions{Registerer: reg}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "mcs_mapping_file_valid"); err != nil || n != 2 {
		t.Fatalf("file_valid series = %d (%v), want 2", n, err)
	}
}

// TestStoreReloadKeepsServing: a file that disappears (mid-swap, or deleted) or turns invalid
// never takes the mapping away; a rejected file is reported once, not on every look; going
// back to the serving content clears the alarm without a reload.
func TestStoreReloadKeepsServing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.yaml")
	writeAtomic(t, path, mappingVariant("v1"))
	reg := prometheus.NewRegistry()
	var reported []Reload
	s, err := NewStore(path, StoreOptions{
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registerer: reg,
		OnReload:   func(r Reload) { reported = append(reported, r) },
	})
	if err != nil {
		t.Fatal(err)
	}
	v1 := s.Current().Version()
	metric := func(result string) float64 {
		return testutil.ToFloat64(s.metrics.reloads.WithLabelValues(path, result))
	}
	valid := func() float64 { return testutil.ToFloat64(s.metrics.valid.WithLabelValues(path)) }

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if r := s.Reload(); r.Applied || !errors.Is(r.Err, fs.ErrNotExist) || r.Version != v1 {
		t.Errorf("file gone: %+v, want not-exist and %s still serving", r, v1)
	}
	if metric(reloadUnreadable) != 1 || valid() != 0 {
		t.Errorf("file gone: unreadable = %v, valid = %v; want 1 and 0", metric(reloadUnreadable), valid())
	}

	writeAtomic(t, path, brokenMapping)
	first, second := s.Reload(), s.Reload()
	if first.Err == nil || second.Err != nil || s.Current().Version() != v1 {
		t.Errorf("broken file looked at twice: %+v then %+v, serving %s; want one rejection, %s serving", first, second, s.Current().Version(), v1)
	}
	if metric(reloadInvalid) != 1 || valid() != 0 {
		t.Errorf("broken file: invalid = %v, valid = %v; want 1 and 0", metric(reloadInvalid), valid())
	}

	writeAtomic(t, path, mappingVariant("v1"))
	if r := s.Reload(); r.Applied || r.Err != nil || valid() != 1 {
		t.Errorf("back to the serving content: %+v, valid = %v; want no reload and valid 1", r, valid())
	}
	if len(reported) != 2 || reported[0].Err == nil || reported[1].Err == nil {
		t.Errorf("OnReload saw %+v; want the unreadable file and the rejection, once each", reported)
	}
	if metric(reloadApplied) != 0 {
		t.Errorf("applied = %v, want 0", metric(reloadApplied))
	}
}
