package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/dwcp/inference/clients/go/internal/layout"
	"github.com/dwcp/inference/clients/go/modelsync"
)

// serviceOptions are FromService's options.
type serviceOptions struct {
	wait            time.Duration
	serveBeforeSync bool
	syncOpts        []modelsync.Option
}

// DefaultSyncWait is how long FromService waits for the first sync unless WithSyncWait says otherwise.
const DefaultSyncWait = 30 * time.Second

// WithModels serves only these models (of Models) when the runtime is opened on a repository; FromService
// syncs only these, and waits for a version of each.
func WithModels(models ...string) Option {
	return func(o *options) { o.models = slices.Clone(models) }
}

// WithSyncWait bounds FromService's wait for the first sync (default DefaultSyncWait).
func WithSyncWait(d time.Duration) Option { return func(o *options) { o.service.wait = d } }

// WithServeBeforeSync makes FromService return the runtime when the wait ends with models still missing,
// instead of an error: those answer with inference.ErrNotLoaded (a Chain then asks the service) until the
// sync installs them. The drop-ins' WithLocalCache opens the runtime this way.
func WithServeBeforeSync() Option { return func(o *options) { o.service.serveBeforeSync = true } }

// WithSyncOptions passes options (backoff, pruning) to the modelsync.Sync FromService runs; its own event
// handler replaces a modelsync.WithEvents given here (the Runtime's WithEventHandler reports what it loads).
func WithSyncOptions(opts ...modelsync.Option) Option {
	return func(o *options) { o.service.syncOpts = append(o.service.syncOpts, opts...) }
}

// FromService runs the service's versions in this process. It keeps cacheDir in step with the service behind
// conn (modelsync.Sync, in the background: new versions, labels, splits, removals), waits until the first sync
// has installed a version of every model (WithModels; all four by default), then opens the Runtime on cacheDir,
// which reloads at once after every sync and polls as Open does. Close stops both; conn stays the caller's.
// Runtimes of one process on the same conn and cacheDir (without WithSyncOptions) share one sync: one watch
// stream of the service, ended with the last runtime's Close.
//
// While the service is down the runtime answers from the cache, and the sync reconnects with backoff. The
// cache is a model repository in the service's layout: a process that starts while the service is unreachable
// and finds a version of every model in cacheDir opens on it at once (and catches up once the service is back);
// embedded.Open(cacheDir) also serves it.
//
// It fails when the wait (WithSyncWait, ctx) ends with a model missing from the cache, or a synced model with
// no version this runtime can serve (a version without the feature graph), naming them and the sync's last
// error; WithServeBeforeSync returns the runtime instead.
func FromService(ctx context.Context, conn grpc.ClientConnInterface, cacheDir string, opts ...Option) (*Runtime, error) {
	var key any
	if conn != nil && reflect.TypeOf(conn).Comparable() {
		key = conn
	}
	return fromService(ctx, key, func() (grpc.ClientConnInterface, func(), error) { return conn, func() {}, nil },
		cacheDir, opts)
}

// fromService is FromService on the sync of cacheDir over the connection connKey names (nil: a sync of its
// own), dialled by dial if this runtime is its first user.
func fromService(ctx context.Context, connKey any, dial dialer, cacheDir string, opts []Option) (*Runtime, error) {
	o := options{service: serviceOptions{wait: DefaultSyncWait}}
	for _, opt := range opts {
		opt(&o)
	}
	if err := knownModels(o.models); err != nil {
		return nil, err
	}
	models := o.models
	if len(models) == 0 {
		models = Models
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded: cache directory: %w", err)
	}
	if len(o.service.syncOpts) > 0 { // its own backoff or pruning: not another runtime's sync
		connKey = nil
	}
	s := newServiceSync()
	shared, err := joinSync(connKey, cacheDir, dial, o.service.syncOpts, s, o.models)
	if err != nil {
		return nil, err
	}
	go s.reloadOnSync()
	stop := func() {
		shared.leave(s)
		close(s.kick) // the sync, the only other sender, no longer tells s
	}

	missing, err := s.waitFirstSync(ctx, cacheDir, models, o.service.wait)
	if err != nil && !o.service.serveBeforeSync {
		stop()
		return nil, err
	}
	rt, openErr := Open(cacheDir, append(slices.Clone(opts), WithModels(models...))...)
	if openErr != nil {
		stop()
		return nil, openErr
	}
	rt.stopSync = stop
	s.setRuntime(rt)
	if len(missing) == 0 && !o.service.serveBeforeSync {
		if err := servesEvery(rt, models); err != nil {
			rt.Close()
			return nil, err
		}
	}
	return rt, nil
}

// serviceSync links a Sync to the Runtime it feeds.
type serviceSync struct {
	synced       chan struct{} // a watch message was applied
	disconnected chan struct{} // the watch failed or ended
	kick         chan struct{} // reload the runtime (coalesced)
	failed       chan error    // the sync ended by itself (it cannot write the cache)

	mu      sync.Mutex
	lastErr error
	rt      *Runtime
}

func newServiceSync() *serviceSync {
	return &serviceSync{synced: make(chan struct{}, 1), disconnected: make(chan struct{}, 1),
		kick: make(chan struct{}, 1), failed: make(chan error, 1)}
}

func (s *serviceSync) fail(err error) {
	select {
	case s.failed <- err:
	default:
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *serviceSync) onEvent(e modelsync.Event) {
	switch e.Kind {
	case modelsync.Synced:
		signal(s.synced)
		signal(s.kick)
	case modelsync.Disconnected:
		s.mu.Lock()
		s.lastErr = e.Err
		s.mu.Unlock()
		signal(s.disconnected)
	}
}

func (s *serviceSync) setRuntime(rt *Runtime) {
	s.mu.Lock()
	s.rt = rt
	s.mu.Unlock()
	signal(s.kick) // what was synced while it opened
}

// reloadOnSync rescans the runtime's directory after each sync, off Sync's goroutine, until kick is closed.
func (s *serviceSync) reloadOnSync() {
	for range s.kick {
		s.mu.Lock()
		rt := s.rt
		s.mu.Unlock()
		if rt != nil {
			rt.Reload()
		}
	}
}

// waitFirstSync returns once the cache holds a version of every model: after a sync, or at once when the
// service cannot be reached and an earlier run's cache is complete. When wait or ctx ends first, it returns the
// models missing and an error naming them.
func (s *serviceSync) waitFirstSync(ctx context.Context, cacheDir string, models []string,
	wait time.Duration) ([]string, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-s.synced:
			if missing := missingModels(cacheDir, models); len(missing) == 0 {
				return nil, nil
			}
		case <-s.disconnected:
			if missing := missingModels(cacheDir, models); len(missing) == 0 {
				return nil, nil // an earlier run's cache; the sync catches up in the background
			}
		case err := <-s.failed:
			return models, fmt.Errorf("embedded: syncing %s: %w", cacheDir, err)
		case <-timer.C:
			return s.missing(cacheDir, models, fmt.Sprintf("within %v", wait))
		case <-ctx.Done():
			return s.missing(cacheDir, models, ctx.Err().Error())
		}
	}
}

func (s *serviceSync) missing(cacheDir string, models []string, why string) ([]string, error) {
	missing := missingModels(cacheDir, models)
	if len(missing) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	last := s.lastErr
	s.mu.Unlock()
	msg := fmt.Sprintf("embedded: no version of %s synced from the service into %s (%s)",
		strings.Join(missing, ", "), cacheDir, why)
	if last != nil {
		msg += "; the sync's last error: " + last.Error()
	}
	return missing, errors.New(msg)
}

// missingModels are the models with no version directory (model.onnx and metadata.json) in dir.
func missingModels(dir string, models []string) []string {
	var missing []string
	for _, m := range models {
		found, _ := filepath.Glob(filepath.Join(dir, m, "*", metadataFile))
		has := false
		for _, f := range found {
			vdir := filepath.Dir(f)
			if layout.IsVersion(filepath.Base(vdir)) && isFile(filepath.Join(vdir, modelFile)) {
				has = true
				break
			}
		}
		if !has {
			missing = append(missing, m)
		}
	}
	return missing
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// servesEvery fails, with the refusals, when a model has no version loaded.
func servesEvery(rt *Runtime, models []string) error {
	st := rt.Status()
	var problems []string
	for _, m := range models {
		loaded := false
		for _, ms := range st.Models {
			loaded = loaded || ms.Name == m && len(ms.Loaded) > 0
		}
		if loaded {
			continue
		}
		why := "no version loaded"
		for _, r := range st.Refused {
			if r.Model == m {
				why += fmt.Sprintf("; version %s refused: %s", r.Version, r.Reason)
			}
		}
		problems = append(problems, m+": "+why)
	}
	if len(problems) > 0 {
		return fmt.Errorf("embedded: synced from the service but not servable here (the service still serves "+
			"them): %s", strings.Join(problems, "; "))
	}
	return nil
}

// knownModels fails when a name is not one of Models.
func knownModels(models []string) error {
	for _, m := range models {
		if !slices.Contains(Models, m) {
			return fmt.Errorf("embedded: model %q: expected one of %v", m, Models)
		}
	}
	return nil
}
