package modelsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/layout"
)

// EventKind says what Sync did.
type EventKind string

const (
	Installed     EventKind = "installed"      // a version was fetched, verified and renamed into place
	Removed       EventKind = "removed"        // a version the server no longer loads was removed
	PolicyWritten EventKind = "policy_written" // the model's policy.json changed (labels, split, history)
	Disconnected  EventKind = "disconnected"   // the watch ended or a version could not be installed; retrying
	// Synced: the directory holds the server's state as of one watch message (the first after each connect is
	// the whole state); sent after the Installed, PolicyWritten and Removed events it caused.
	Synced EventKind = "synced"
)

// Event is one thing Sync did, given to the function of WithEvents.
type Event struct {
	Kind    EventKind
	Model   string
	Version string
	Err     error // Disconnected: why
}

type options struct {
	models     []string
	minBackoff time.Duration
	maxBackoff time.Duration
	prune      bool
	onEvent    func(Event)
}

// Option configures Sync.
type Option func(*options)

// WithModels syncs only these models (full names); by default every model the server has.
func WithModels(models ...string) Option {
	return func(o *options) { o.models = append([]string{}, models...) }
}

// WithBackoff sets the wait before reconnecting after a failure: first min, doubling up to max, with jitter;
// back to min once a watch message has been applied. Defaults: 100 ms and 10 s.
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.minBackoff, o.maxBackoff = min, max }
}

// WithoutPruning keeps versions the server no longer loads (by default they are removed from the directory).
func WithoutPruning() Option {
	return func(o *options) { o.prune = false }
}

// WithEvents calls fn, from Sync's goroutine, after everything Sync does.
func WithEvents(fn func(Event)) Option {
	return func(o *options) { o.onEvent = fn }
}

// Sync keeps dir in step with the server behind conn until ctx ends (then it returns ctx's error): every version
// the server's watch lists is fetched (FetchVersion: verified, renamed into place), each model's policy.json
// follows the server's labels and split, and versions the server unloaded are removed. A server that goes away,
// a watch cut by a restart or a download that does not verify: Sync reconnects with backoff and resumes (the
// watch's first message is the whole state again). A corrupt download is never installed.
func Sync(ctx context.Context, conn grpc.ClientConnInterface, dir string, opts ...Option) error {
	o := options{minBackoff: 100 * time.Millisecond, maxBackoff: 10 * time.Second, prune: true,
		onEvent: func(Event) {}}
	for _, opt := range opts {
		opt(&o)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	removeLeftovers(dir, o.models)
	s := &syncer{conn: conn, dir: dir, o: o, verified: map[string]string{}}
	backoff := o.minBackoff
	for {
		progressed, err := s.watch(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		o.onEvent(Event{Kind: Disconnected, Err: err})
		if progressed {
			backoff = o.minBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(backoff*2, o.maxBackoff)
	}
}

type syncer struct {
	conn     grpc.ClientConnInterface
	dir      string
	o        options
	verified map[string]string // "<model>/<version>" -> the sha256 of its model.onnx, checked on disk
}

// watch applies one WatchModels stream's messages until it ends or a message cannot be applied; progressed
// says whether any message was applied.
func (s *syncer) watch(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewModelDistributionClient(s.conn).WatchModels(ctx, &pb.WatchModelsRequest{Models: s.o.models})
	if err != nil {
		return false, err
	}
	for {
		update, err := stream.Recv()
		if err == io.EOF {
			return progressed, errors.New("modelsync: the server ended the watch")
		}
		if err != nil {
			return progressed, err
		}
		for _, state := range update.GetModels() {
			if err := s.apply(ctx, state); err != nil {
				return progressed, err
			}
		}
		progressed = true
		s.o.onEvent(Event{Kind: Synced})
	}
}

// apply brings one model's directory to the state: new versions first, then policy.json (so a label never names
// a version not yet on disk), then the removal of versions no longer loaded.
func (s *syncer) apply(ctx context.Context, state *pb.ModelState) error {
	model := state.GetName()
	if !plainName(model) {
		return fmt.Errorf("%w: a model named %q", ErrCorrupt, model)
	}
	if len(state.GetVersions()) == 0 {
		return nil // nothing serves there now: keep what is here rather than empty the directory
	}
	modelDir := filepath.Join(s.dir, model)
	wanted := map[string]bool{}
	for _, v := range state.GetVersions() {
		version, sha := v.GetVersion(), v.GetModelSha256()
		if !layout.IsVersion(version) {
			return fmt.Errorf("%w: %s version %q", ErrCorrupt, model, version)
		}
		wanted[version] = true
		key := model + "/" + version
		vdir := filepath.Join(modelDir, version)
		if s.verified[key] == sha {
			continue
		}
		if !verifiedLocally(vdir, model, version, sha) {
			ref, err := FetchVersion(ctx, s.conn, s.dir, model, &pb.ModelSelector{Version: version})
			if err != nil {
				return err
			}
			if ref.GetVersion() != version || !verifiedLocally(vdir, model, version, sha) {
				return fmt.Errorf("%w: %s version %s is not the one the watch announced (sha256 %s)", ErrCorrupt,
					model, version, sha)
			}
			s.o.onEvent(Event{Kind: Installed, Model: model, Version: version})
		}
		s.verified[key] = sha
	}
	changed, err := writePolicy(modelDir, state)
	if err != nil {
		return err
	}
	if changed {
		s.o.onEvent(Event{Kind: PolicyWritten, Model: model})
	}
	if s.o.prune {
		return s.prune(model, modelDir, wanted)
	}
	return nil
}

func (s *syncer) prune(model, modelDir string, wanted map[string]bool) error {
	entries, err := os.ReadDir(modelDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() || !layout.IsVersion(e.Name()) || wanted[e.Name()] {
			continue
		}
		// Renamed out of sight first (loaders skip dot directories), then deleted.
		aside, err := os.MkdirTemp(modelDir, ".removed-")
		if err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(modelDir, e.Name()), filepath.Join(aside, "v")); err != nil {
			os.Remove(aside)
			return err
		}
		os.RemoveAll(aside)
		delete(s.verified, model+"/"+e.Name())
		s.o.onEvent(Event{Kind: Removed, Model: model, Version: e.Name()})
	}
	return nil
}

// removeLeftovers deletes what an interrupted run left behind: half-fetched, replaced or removed versions, of
// the models synced (every model when none is named), so that a Sync of other models into the same directory
// keeps its downloads under way.
func removeLeftovers(dir string, models []string) {
	modelDirs := []string{"*"}
	if len(models) > 0 {
		modelDirs = models
	}
	for _, pattern := range []string{stagingPrefix + "*", ".replaced-*", ".removed-*", ".policy-*"} {
		for _, model := range modelDirs {
			if model != "*" && !plainName(model) {
				continue
			}
			matches, _ := filepath.Glob(filepath.Join(dir, model, pattern))
			for _, m := range matches {
				os.RemoveAll(m)
			}
		}
	}
}
