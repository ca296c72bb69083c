package inference

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// LocalRuntime is a model runtime in this process (the embedded package's Runtime): an Answerer to Close.
type LocalRuntime interface {
	Answerer
	io.Closer
}

// LocalConfig is what a local runtime is opened with besides the path.
type LocalConfig struct {
	// Library is the libonnxruntime shared library to load; empty lets the runtime find one.
	Library string

	// CacheDir and Target, both set, make the local runtime a copy of the service's versions
	// (embedded.FromService): Models are synced from the service at Target (dialled with ClientOptions: TLS...)
	// into CacheDir and run in-process from there, following the service's new versions, labels and splits;
	// the path given to the opener is CacheDir. The runtime waits up to SyncWait (0: 5 s) for
	// the first sync, then serves what the cache holds (nothing yet answers ErrNotLoaded: the chain asks the
	// service) and loads the rest as it arrives. A cache left by an earlier run serves at once when the service
	// is unreachable.
	CacheDir      string
	Target        string
	ClientOptions []Option
	Models        []string // model names to sync; empty: every model
	SyncWait      time.Duration
}

// FromService reports whether the config asks for a runtime synced from a service (CacheDir and Target set).
func (c LocalConfig) FromService() bool { return c.CacheDir != "" && c.Target != "" }

// SyncedFrom is c asking for model synced from the service at target into cacheDir (the drop-ins'
// WithLocalCache): clientOpts (TLS...) come before c's own ClientOptions.
func (c LocalConfig) SyncedFrom(target string, clientOpts []Option, cacheDir, model string) LocalConfig {
	c.CacheDir, c.Target, c.Models = cacheDir, target, []string{model}
	c.ClientOptions = append(append([]Option(nil), clientOpts...), c.ClientOptions...)
	return c
}

// ConnKey identifies the connection Dial(opts...) makes (target, TLS configuration, keepalive), so that a
// process can share one: two option lists with equal keys dial equal connections. It is nil when the options
// cannot be compared (raw WithDialOptions): such a connection is never shared.
func ConnKey(opts ...Option) any {
	cfg := newConfig(opts)
	if len(cfg.DialOptions) > 0 {
		return nil
	}
	return connKey{cfg.Target, cfg.TLS, cfg.KeepaliveTime}
}

type connKey struct {
	target    string
	tls       *tls.Config // the same configuration, not an equal one: its fields hold functions
	keepalive time.Duration
}

// LocalOpener opens a local runtime on path: a model repository directory in our layout, a model's directory
// in one, a version directory (holding model.onnx and metadata.json) or a version's model.onnx. LocateModel
// tells them apart.
type LocalOpener func(path string, cfg LocalConfig) (LocalRuntime, error)

var (
	localMu     sync.RWMutex
	localOpener LocalOpener
)

// RegisterLocal makes open the local runtime the drop-ins use, as database/sql drivers register themselves:
// the embedded package calls it from its init, so importing it (import _ ".../clients/go/embedded") is what
// lets prediction.NewLSTMPredictor(path) run the model in-process, with no cgo in the packages that do not
// import it. It panics when open is nil or a runtime is already registered.
func RegisterLocal(open LocalOpener) {
	localMu.Lock()
	defer localMu.Unlock()
	if open == nil {
		panic("inference: RegisterLocal with a nil opener")
	}
	if localOpener != nil {
		panic("inference: RegisterLocal called twice")
	}
	localOpener = open
}

// LocalRegistered reports whether a local runtime is registered.
func LocalRegistered() bool {
	localMu.RLock()
	defer localMu.RUnlock()
	return localOpener != nil
}

// ErrNoLocalRuntime is returned by OpenLocal when no local runtime is registered.
var ErrNoLocalRuntime = errors.New("inference: no local runtime is registered: import _ " +
	"\"github.com/dwcp/inference/clients/go/embedded\" (cgo, onnxruntime) to run models in-process, or name a " +
	"service (WithTarget, $DWCP_INFERENCE_TARGET) to ask it instead")

// OpenLocal opens the registered local runtime on path.
func OpenLocal(path string, cfg LocalConfig) (LocalRuntime, error) {
	localMu.RLock()
	open := localOpener
	localMu.RUnlock()
	if open == nil {
		return nil, fmt.Errorf("%w (model path %s)", ErrNoLocalRuntime, path)
	}
	return open(path, cfg)
}

// ModelLocation is where a path points in a model repository (<repo>/<model>/<version>/model.onnx).
type ModelLocation struct {
	Repository string // the repository directory
	Model      string // empty when the path is the repository
	Version    string // empty unless the path is a version directory or its model.onnx
}

// LocateModel tells what path names: a version's model.onnx or directory (it holds metadata.json), a model's
// directory (a subdirectory holds metadata.json), or else a repository. It fails when path does not exist.
func LocateModel(path string) (ModelLocation, error) {
	st, err := os.Stat(path)
	if err != nil {
		return ModelLocation{}, err
	}
	dir := filepath.Clean(path)
	if !st.IsDir() {
		dir = filepath.Dir(dir)
		if !isRegular(filepath.Join(dir, "metadata.json")) {
			return ModelLocation{}, fmt.Errorf("%s: a model file outside a version directory (no metadata.json "+
				"beside it): give the version directory of a model repository", path)
		}
	}
	if isRegular(filepath.Join(dir, "metadata.json")) {
		model := filepath.Dir(dir)
		return ModelLocation{Repository: filepath.Dir(model), Model: filepath.Base(model), Version: filepath.Base(dir)}, nil
	}
	if versions, _ := filepath.Glob(filepath.Join(dir, "*", "metadata.json")); len(versions) > 0 {
		return ModelLocation{Repository: filepath.Dir(dir), Model: filepath.Base(dir)}, nil
	}
	return ModelLocation{Repository: dir}, nil
}

func isRegular(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
