package embedded

import (
	"context"
	"path/filepath"
	"slices"
	"sync"

	"google.golang.org/grpc"

	"github.com/dwcp/inference/clients/go/modelsync"
)

// A process's runtimes synced into the same cache directory over the same connection share one modelsync.Sync
// (one WatchModels stream, one of the server's --max-watchers slots): four drop-ins with WithLocalCache(dir)
// hold one watch, not four. The sync covers every model its users asked for (a user asking for a model it does
// not cover restarts its stream with the union), is reference counted, and ends with its last user, closing a
// connection it dialled.

// dialer makes the connection a sync uses: the connection and what releases it (nothing for a caller's own).
type dialer func() (grpc.ClientConnInterface, func(), error)

type syncKey struct {
	conn any // the connection (a caller's) or inference.ConnKey (one the sync dials)
	dir  string
}

var (
	sharedMu sync.Mutex
	shared   = map[syncKey]*sharedSync{}
)

type sharedSync struct {
	key     syncKey // key.conn nil: this user's own, not shared
	conn    grpc.ClientConnInterface
	release func()
	dir     string
	opts    []modelsync.Option
	users   int // guarded by sharedMu

	mu     sync.Mutex // the models covered and the running Sync
	all    bool       // some user wants every model
	models []string
	cancel context.CancelFunc
	done   chan struct{}

	listenMu  sync.Mutex
	listeners map[*serviceSync]bool
	synced    bool // a watch message has been applied
	down      bool // the watch failed since, with lastErr
	lastErr   error
}

// joinSync makes s a listener of the sync of dir over the connection conn names (nil: not shareable, a sync of
// s's own), dialled by dial for its first user, and makes it cover models (nil: every model).
func joinSync(conn any, dir string, dial dialer, opts []modelsync.Option, s *serviceSync,
	models []string) (*sharedSync, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	h, err := acquire(syncKey{conn, abs}, dir, dial, opts)
	if err != nil {
		return nil, err
	}
	h.listenMu.Lock()
	h.listeners[s] = true
	h.listenMu.Unlock()
	h.cover(models)
	h.listenMu.Lock()
	if h.synced { // what the stream did before s joined: a message applied, or the service down now
		s.onEvent(modelsync.Event{Kind: modelsync.Synced})
	}
	if h.down {
		s.onEvent(modelsync.Event{Kind: modelsync.Disconnected, Err: h.lastErr})
	}
	h.listenMu.Unlock()
	return h, nil
}

func acquire(key syncKey, dir string, dial dialer, opts []modelsync.Option) (*sharedSync, error) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if h := shared[key]; key.conn != nil && h != nil {
		h.users++
		return h, nil
	}
	conn, release, err := dial()
	if err != nil {
		return nil, err
	}
	h := &sharedSync{key: key, conn: conn, release: release, dir: dir, opts: opts, users: 1,
		listeners: map[*serviceSync]bool{}}
	if key.conn != nil {
		shared[key] = h
	}
	return h, nil
}

// leave stops telling s what the sync does; the last user's leave ends the sync and releases its connection.
func (h *sharedSync) leave(s *serviceSync) {
	h.listenMu.Lock()
	delete(h.listeners, s)
	h.listenMu.Unlock()
	sharedMu.Lock()
	h.users--
	last := h.users == 0
	if last && h.key.conn != nil {
		delete(shared, h.key)
	}
	sharedMu.Unlock()
	if last {
		h.mu.Lock()
		h.stop()
		h.mu.Unlock()
		h.release()
	}
}

// cover restarts the sync when it does not sync every one of models yet (nil: every model).
func (h *sharedSync) cover(models []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.covers(models) {
		return
	}
	if len(models) == 0 {
		h.all = true
	}
	for _, m := range models {
		if !slices.Contains(h.models, m) {
			h.models = append(h.models, m)
		}
	}
	h.stop()
	h.start()
}

// covers says whether the running Sync syncs every one of models; with h.mu held.
func (h *sharedSync) covers(models []string) bool {
	if h.cancel == nil || !h.all && len(models) == 0 {
		return false
	}
	for _, m := range models {
		if !h.all && !slices.Contains(h.models, m) {
			return false
		}
	}
	return true
}

// start runs Sync for the models covered; with h.mu held.
func (h *sharedSync) start() {
	opts := append(slices.Clone(h.opts), modelsync.WithEvents(h.tell))
	if !h.all {
		opts = append(opts, modelsync.WithModels(h.models...))
	}
	h.listenMu.Lock()
	h.synced, h.down = false, false // what the new stream applies, it tells
	h.listenMu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	h.cancel, h.done = cancel, done
	go func() {
		defer close(done)
		if err := modelsync.Sync(ctx, h.conn, h.dir, opts...); ctx.Err() == nil {
			h.listenMu.Lock()
			for s := range h.listeners {
				s.fail(err)
			}
			h.listenMu.Unlock()
		}
	}()
}

// stop ends the running Sync, if any, and waits for it; with h.mu held.
func (h *sharedSync) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

// tell hands one of Sync's events to every listener.
func (h *sharedSync) tell(e modelsync.Event) {
	h.listenMu.Lock()
	defer h.listenMu.Unlock()
	switch e.Kind {
	case modelsync.Synced:
		h.synced, h.down = true, false
	case modelsync.Disconnected:
		h.down, h.lastErr = true, e.Err
	}
	for s := range h.listeners {
		s.onEvent(e)
	}
}
