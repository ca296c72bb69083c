package embedded

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/layout"
)

// Event reports a change of what the runtime serves: a version loaded, refused or unloaded, a policy refused.
type Event struct {
	Model   string
	Version string // empty for a policy event
	Kind    string // "loaded", "refused", "unloaded", "policy refused", "policy accepted"
	Reason  string // why, for "refused" and "policy refused"
}

func (e Event) String() string {
	s := e.Model
	if e.Version != "" {
		s += " version " + e.Version
	}
	s += ": " + e.Kind
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Option configures a Runtime.
type Option func(*options)

type options struct {
	library   string
	stateDir  string
	poll      time.Duration
	onEvent   func(Event)
	maxBatch  int
	maxWindow int
	models    []string       // WithModels: the models served from a repository (nil: all)
	service   serviceOptions // FromService's
}

// WithLibrary names the libonnxruntime shared library (else $DWCP_ONNXRUNTIME_LIB, else a .venv's).
func WithLibrary(path string) Option { return func(o *options) { o.library = path } }

// WithStateDir reads each model's policy.json from dir/<model>/ first, as the server's --state-dir does.
func WithStateDir(dir string) Option { return func(o *options) { o.stateDir = dir } }

// WithPollInterval sets how often the repository is scanned for new versions and policies (default 2 s;
// 0 scans only at Open and on Reload).
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.poll = d } }

// WithEventHandler receives every load, refusal, unload and policy refusal (called by the goroutine that scanned,
// after the scan).
func WithEventHandler(f func(Event)) Option { return func(o *options) { o.onEvent = f } }

// WithLimits sets the most items a batch call takes and the most samples in one history or window (the server's
// --max-batch and --max-window; default 1024 each).
func WithLimits(maxBatch, maxWindow int) Option {
	return func(o *options) { o.maxBatch, o.maxWindow = maxBatch, maxWindow }
}

// Runtime answers the inference RPCs in-process from a model repository directory
// (<repo>/<model>/<version>/{model.onnx,metadata.json} and <repo>/<model>/policy.json). It verifies each version
// before serving it and swaps versions atomically while calls run. Safe for concurrent use.
type Runtime struct {
	repo    string            // the repository directory
	sources map[string]string // each model served and its directory
	only    string            // when opened on one version: that version, whatever the policy says
	opts    options
	snap    atomic.Pointer[snapshot]

	scanMu    sync.Mutex // one scan at a time
	refused   map[[2]string]refusedVersion
	policyErr map[string]string
	pending   []Event // events of the scan under way
	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	stopSync  func() // FromService's: ends the sync (and closes a connection it made); nil otherwise
}

type refusedVersion struct {
	fp     fingerprint
	reason string
}

// snapshot is what serves, immutable once published.
type snapshot struct {
	models map[string]*modelEntry
}

type modelEntry struct {
	policy   policy
	versions map[string]*version
	fps      map[string]fingerprint
	sorted   []string // the loaded versions, oldest first
}

// Models are the model names the runtime loads from a repository (one per kind of RPC).
var Models = []string{BandwidthModel, CompressionModel, AnomalyModel, LatencyModel}

// Open loads and verifies the versions at path and starts watching it. path is a model repository directory in
// our layout (every model in it), a model's directory in one (that model, by its policy), or a version directory
// or its model.onnx (that version alone). The error names the problem when the library or the path cannot be
// used; versions that fail verification are reported (Status, the event handler) and not served.
func Open(path string, opts ...Option) (*Runtime, error) {
	o := options{poll: 2 * time.Second, maxBatch: 1024, maxWindow: 1024}
	for _, opt := range opts {
		opt(&o)
	}
	loc, err := inference.LocateModel(path)
	if err != nil {
		return nil, fmt.Errorf("embedded: model path: %w", err)
	}
	r := &Runtime{repo: loc.Repository, sources: map[string]string{}, only: loc.Version, opts: o,
		refused: map[[2]string]refusedVersion{}, policyErr: map[string]string{}, stop: make(chan struct{}),
		done: make(chan struct{})}
	if err := knownModels(o.models); err != nil {
		return nil, err
	}
	if loc.Model == "" {
		for _, m := range Models {
			if len(o.models) == 0 || slices.Contains(o.models, m) {
				r.sources[m] = filepath.Join(loc.Repository, m)
			}
		}
	} else {
		dir := filepath.Join(loc.Repository, loc.Model)
		kind, err := modelKind(dir, loc)
		if err != nil {
			return nil, err
		}
		r.sources[kind] = dir
	}
	lib, err := FindLibrary(o.library)
	if err != nil {
		return nil, err
	}
	if err := startEnvironment(lib); err != nil {
		return nil, err
	}
	r.snap.Store(&snapshot{models: map[string]*modelEntry{}})
	r.Reload()
	go r.watch()
	return r, nil
}

// modelKind is which of the four models a model directory holds: its name, or else its versions' metadata name
// (a directory such as /models/bandwidth_lstm).
func modelKind(dir string, loc inference.ModelLocation) (string, error) {
	if slices.Contains(Models, loc.Model) {
		return loc.Model, nil
	}
	pattern := filepath.Join(dir, "*", metadataFile)
	if loc.Version != "" {
		pattern = filepath.Join(dir, loc.Version, metadataFile)
	}
	found, _ := filepath.Glob(pattern)
	for _, f := range found {
		if m, err := readMetadata(filepath.Dir(f)); err == nil && slices.Contains(Models, m.Name) {
			return m.Name, nil
		}
	}
	return "", fmt.Errorf("embedded: %s holds none of the models %v (by its name or its versions' metadata)", dir,
		Models)
}

func (r *Runtime) watch() {
	defer close(r.done)
	if r.opts.poll <= 0 {
		return
	}
	t := time.NewTicker(r.opts.poll)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.Reload()
		}
	}
}

// Close stops watching and frees every version once the calls using it have finished. Calls after Close fail
// with codes.Unavailable.
func (r *Runtime) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	close(r.stop)
	<-r.done
	if r.stopSync != nil {
		r.stopSync()
	}
	r.scanMu.Lock()
	defer r.scanMu.Unlock()
	old := r.snap.Swap(&snapshot{models: map[string]*modelEntry{}})
	for _, e := range old.models {
		for _, v := range e.versions {
			v.close()
		}
	}
	return nil
}

// emit queues an event; Reload hands the queue to the handler once the scan's lock is released (so a handler
// may call Status or Reload).
func (r *Runtime) emit(e Event) { r.pending = append(r.pending, e) }

// Reload scans the repository now: new versions are verified (off the call path: calls keep using the
// published snapshot) and swapped in; versions gone from disk or from the policy are freed once idle.
func (r *Runtime) Reload() {
	r.scanMu.Lock()
	r.scan()
	events := r.pending
	r.pending = nil
	r.scanMu.Unlock()
	if r.opts.onEvent != nil {
		for _, e := range events {
			r.opts.onEvent(e)
		}
	}
}

func (r *Runtime) scan() {
	if r.closed.Load() {
		return
	}
	old := r.snap.Load()
	next := &snapshot{models: map[string]*modelEntry{}}
	changed := false
	for _, model := range Models {
		dir, served := r.sources[model]
		if !served {
			continue
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			changed = changed || old.models[model] != nil
			continue
		}
		entry, modelChanged := r.scanModel(model, dir, old.models[model])
		next.models[model] = entry
		changed = changed || modelChanged
	}
	if !changed {
		return
	}
	r.snap.Store(next)
	for model, e := range old.models {
		for ver, v := range e.versions {
			if n := next.models[model]; n == nil || n.versions[ver] != v {
				if n == nil || n.versions[ver] == nil {
					r.emit(Event{Model: model, Version: ver, Kind: "unloaded"})
				}
				go v.close() // waits for the calls that hold it
			}
		}
	}
}

func (r *Runtime) scanModel(model, dir string, old *modelEntry) (*modelEntry, bool) {
	pol, err := policy{KeepLatest: 1, Pinned: []string{r.only}}, error(nil) // opened on one version: it alone
	if r.only == "" {
		pol, err = readPolicy(policySource(dir, r.opts.stateDir, model))
	}
	if err != nil {
		if r.policyErr[model] != err.Error() {
			r.emit(Event{Model: model, Kind: "policy refused", Reason: err.Error() + " (the last good policy serves)"})
		}
		r.policyErr[model] = err.Error()
		pol = defaultPolicy()
		if old != nil {
			pol = old.policy
		}
	} else if _, was := r.policyErr[model]; was {
		delete(r.policyErr, model)
		r.emit(Event{Model: model, Kind: "policy accepted"})
	}
	entries, err := os.ReadDir(dir)
	if err != nil && old != nil { // unreadable for now: what serves keeps serving
		return old, false
	}
	var onDisk []string
	for _, e := range entries {
		if e.IsDir() && layout.IsVersion(e.Name()) {
			onDisk = append(onDisk, e.Name())
		}
	}
	slices.SortFunc(onDisk, versionLess)
	for key := range r.refused { // forget refusals of versions gone from disk
		if key[0] == model && !slices.Contains(onDisk, key[1]) {
			delete(r.refused, key)
		}
	}
	entry := &modelEntry{policy: pol, versions: map[string]*version{}, fps: map[string]fingerprint{}}
	latest := 0
	for i := len(onDisk) - 1; i >= 0; i-- {
		ver := onDisk[i]
		want, inLatest := wanted(pol, ver, latest)
		if r.only != "" {
			want, inLatest = ver == r.only, false
		}
		if !want {
			continue
		}
		vdir := filepath.Join(dir, ver)
		fp := fingerprintOf(vdir)
		var v *version
		if old != nil && old.versions[ver] != nil && old.fps[ver] == fp {
			v = old.versions[ver]
		} else {
			v = r.load(model, ver, vdir, fp)
			if v == nil && old != nil && old.versions[ver] != nil {
				// Its files changed in place and no longer verify: the copy already loaded keeps serving.
				v, fp = old.versions[ver], old.fps[ver]
			}
		}
		if v == nil {
			continue
		}
		entry.versions[ver], entry.fps[ver] = v, fp
		if inLatest {
			latest++
		}
	}
	for ver := range entry.versions {
		entry.sorted = append(entry.sorted, ver)
	}
	slices.SortFunc(entry.sorted, versionLess)
	changed := old == nil || !samePolicy(old.policy, pol) || len(old.versions) != len(entry.versions)
	if !changed {
		for ver, v := range entry.versions {
			if old.versions[ver] != v {
				changed = true
			}
		}
	}
	return entry, changed
}

func (r *Runtime) load(model, ver, vdir string, fp fingerprint) *version {
	key := [2]string{model, ver}
	if prev, ok := r.refused[key]; ok && prev.fp == fp {
		return nil
	}
	v, err := loadVersion(model, vdir)
	if err != nil {
		r.refused[key] = refusedVersion{fp, err.Error()}
		r.emit(Event{Model: model, Version: ver, Kind: "refused", Reason: err.Error()})
		return nil
	}
	delete(r.refused, key)
	r.emit(Event{Model: model, Version: ver, Kind: "loaded"})
	return v
}

func samePolicy(a, b policy) bool {
	return fmt.Sprint(a) == fmt.Sprint(b) // maps print sorted: a cheap deep comparison
}

// fingerprint changes whenever a version's files change (or appear).
type fingerprint [4]int64

func fingerprintOf(vdir string) fingerprint {
	var fp fingerprint
	for k, name := range []string{metadataFile, modelFile} {
		if st, err := os.Stat(filepath.Join(vdir, name)); err == nil {
			fp[2*k], fp[2*k+1] = st.Size(), st.ModTime().UnixNano()
		} else {
			fp[2*k] = -1
		}
	}
	return fp
}

// acquire returns the version that answers a call (held until releaseCall): the one the selector names, or the
// policy's choice (services/repository.py get).
func (r *Runtime) acquire(model string, sel *pb.ModelSelector) (*version, error) {
	for {
		if r.closed.Load() {
			return nil, status.Error(codes.Unavailable, "embedded runtime is closed")
		}
		v, err := r.snap.Load().pick(model, sel.GetVersion(), sel.GetLabel())
		if err != nil {
			return nil, err
		}
		if v.tryAcquire() {
			return v, nil
		}
		runtime.Gosched() // it is being retired: a newer snapshot is already published
	}
}

func (s *snapshot) pick(model, ver, label string) (*version, error) {
	e := s.models[model]
	if e == nil || len(e.versions) == 0 {
		return nil, notLoaded{status.Newf(codes.Unavailable, "model %s: no valid version is loaded", model)}
	}
	if ver != "" {
		if v := e.versions[ver]; v != nil {
			return v, nil
		}
		return nil, status.Errorf(codes.NotFound, "model.version: %s has no loaded version '%s', loaded: %s", model,
			ver, pyList(e.loaded()))
	}
	if label != "" && label != "latest" {
		if v := e.versions[e.policy.Labels[label]]; v != nil {
			return v, nil
		}
		return nil, status.Errorf(codes.NotFound, "model.label: %s has no label '%s' on a loaded version (labels: %s)",
			model, label, pyDict(e.policy.Labels))
	}
	if label == "latest" { // the newest loaded version, whatever the policy's labels say (as the server)
		return e.versions[e.highest()], nil
	}
	return e.chosen(), nil
}

// chosen is the policy's choice: the weighted split between labels on loaded versions, else stable, else the
// highest loaded version.
func (e *modelEntry) chosen() *version {
	var labels []string
	total := 0.0
	for label, w := range e.policy.Split {
		if w > 0 && e.versions[e.policy.Labels[label]] != nil {
			labels = append(labels, label)
			total += w
		}
	}
	if len(labels) > 0 {
		sort.Strings(labels)
		x := rand.Float64() * total
		for _, label := range labels {
			x -= e.policy.Split[label]
			if x < 0 {
				return e.versions[e.policy.Labels[label]]
			}
		}
		return e.versions[e.policy.Labels[labels[len(labels)-1]]]
	}
	if v := e.versions[e.policy.Labels["stable"]]; v != nil {
		return v
	}
	return e.versions[e.highest()]
}

func (e *modelEntry) loaded() []string { return slices.Clone(e.sorted) }

func (e *modelEntry) highest() string { return e.sorted[len(e.sorted)-1] }

// notLoaded is UNAVAILABLE, as the server answers, and inference.ErrNotLoaded to a drop-in's chain.
type notLoaded struct{ s *status.Status }

func (e notLoaded) Error() string              { return e.s.Err().Error() }
func (e notLoaded) GRPCStatus() *status.Status { return e.s }
func (e notLoaded) Unwrap() error              { return inference.ErrNotLoaded }

// Status is what a Runtime serves and what it refused.
type Status struct {
	Models  []ModelStatus
	Refused []Refusal
}

// ModelStatus is one model's loaded versions and policy.
type ModelStatus struct {
	Name        string
	Loaded      []string          // oldest first
	Labels      map[string]string // the policy's labels
	Default     string            // the version a call without a selector gets (without a split)
	PolicyError string            // why the policy file is refused ("" when it is not): the last good one serves
}

// Refusal is a version on disk that is not served, and why.
type Refusal struct {
	Model, Version, Reason string
}

// Status lists the loaded versions of each model and the refused versions with their reasons.
func (r *Runtime) Status() Status {
	r.scanMu.Lock()
	defer r.scanMu.Unlock()
	s := r.snap.Load()
	var out Status
	for _, model := range Models {
		e := s.models[model]
		if e == nil {
			continue
		}
		ms := ModelStatus{Name: model, Loaded: e.loaded(), Labels: e.policy.Labels, PolicyError: r.policyErr[model]}
		if len(e.versions) > 0 {
			if v := e.versions[e.policy.Labels["stable"]]; v != nil {
				ms.Default = v.meta.Version
			} else {
				ms.Default = e.highest()
			}
		}
		out.Models = append(out.Models, ms)
	}
	for key, ref := range r.refused {
		out.Refused = append(out.Refused, Refusal{key[0], key[1], ref.reason})
	}
	sort.Slice(out.Refused, func(i, j int) bool {
		a, b := out.Refused[i], out.Refused[j]
		return a.Model < b.Model || a.Model == b.Model && versionLess(a.Version, b.Version) < 0
	})
	return out
}
