// Package encoding is a drop-in replacement for DWCP's compression selector
// (backend/core/network/dwcp/v3/encoding/ml_compression_selector.go): the same exported names, answered by the
// inference service's compression_selector. Only the import path changes, with one deviation: DWCP's
// NetworkMode lives in its upgrade package, which this module cannot import, so NetworkMode and its constants
// (ModeDatacenter = 0, ModeInternet = 1, ModeHybrid = 2, the same names and values) are declared here; a DWCP
// caller passes encoding.ModeInternet where it passed upgrade.ModeInternet (or converts: encoding.NetworkMode(m)).
package encoding

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// NetworkMode is the DWCP transport mode of a link (DWCP's upgrade.NetworkMode: same constants and values).
type NetworkMode int

const (
	ModeDatacenter NetworkMode = iota
	ModeInternet
	ModeHybrid
)

func (m NetworkMode) String() string {
	switch m {
	case ModeDatacenter:
		return "datacenter"
	case ModeInternet:
		return "internet"
	case ModeHybrid:
		return "hybrid"
	}
	return "unknown"
}

// CompressionAlgorithm is a codec and level class (DWCP's type: same constants and values).
type CompressionAlgorithm int

const (
	CompressionNone    CompressionAlgorithm = inference.AlgorithmNone
	CompressionLZ4     CompressionAlgorithm = inference.AlgorithmLZ4
	CompressionZstd    CompressionAlgorithm = inference.AlgorithmZstd
	CompressionZstdMax CompressionAlgorithm = inference.AlgorithmZstdMax
	CompressionBrotli  CompressionAlgorithm = inference.AlgorithmBrotli
)

func (ca CompressionAlgorithm) String() string {
	switch ca {
	case CompressionNone:
		return "none"
	case CompressionLZ4:
		return "lz4"
	case CompressionZstd:
		return "zstd"
	case CompressionZstdMax:
		return "zstd-max"
	case CompressionBrotli:
		return "brotli"
	}
	return "unknown"
}

// GetCompressionLevel is the codec level each algorithm stands for: the service's levels (lz4 1, zstd 3,
// zstd-max 19) and brotli 11.
func GetCompressionLevel(algo CompressionAlgorithm) int {
	switch algo {
	case CompressionNone:
		return 0
	case CompressionLZ4:
		return 1
	case CompressionZstdMax:
		return 19
	case CompressionBrotli:
		return 11
	}
	return 3
}

// DataCharacteristics describes a payload (DWCP's type, verbatim). The service computes a payload's traits
// from its sample; this type is kept so that code naming it compiles.
type DataCharacteristics struct {
	Size          int
	Entropy       float64
	Compressible  bool
	RepeatPattern bool
	TextLike      bool
	BinaryLike    bool
}

// AlgorithmStats is what RecordPerformance learned of an algorithm (DWCP's type, verbatim).
type AlgorithmStats struct {
	TotalBytes      int64
	CompressedBytes int64
	TotalTime       time.Duration
	UseCount        int64
	AverageRatio    float64
	AverageSpeed    float64 // MB/s
	LastUsed        time.Time
}

// SelectorConfig configures the selector (DWCP's type, verbatim). Here LearningRate weighs RecordPerformance's
// moving averages and SmallDataSize is the size below which payloads are sent uncompressed without asking;
// the other fields are DWCP's rule's and are kept for compatibility (the model decides instead).
type SelectorConfig struct {
	LearningRate    float64
	AdaptiveEnabled bool

	SmallDataSize int
	LargeDataSize int

	DatacenterTargetSpeed float64
	InternetTargetRatio   float64
}

// DefaultSelectorConfig returns the defaults: learning rate 0.1, payloads under 1 KiB sent uncompressed.
func DefaultSelectorConfig() *SelectorConfig {
	return &SelectorConfig{LearningRate: 0.1, AdaptiveEnabled: true, SmallDataSize: 1 << 10, LargeDataSize: 1 << 20,
		DatacenterTargetSpeed: 1000, InternetTargetRatio: 5}
}

// SampleBytes of a payload are sent for the service to estimate its entropy and compressibility.
const SampleBytes = 4096

// TargetEnv names the environment variable that gives the service's address when no option does.
const TargetEnv = "DWCP_INFERENCE_TARGET"

// Link is what the selector knows of the link; UpdateLink keeps it current.
type Link struct{ ThroughputMbps, RTTMs, PacketLoss float64 }

// Typical links per mode, used until UpdateLink is called.
var defaultLinks = map[NetworkMode]Link{
	ModeDatacenter: {ThroughputMbps: 10000, RTTMs: 0.5, PacketLoss: 1e-6},
	ModeInternet:   {ThroughputMbps: 100, RTTMs: 50, PacketLoss: 1e-3},
	ModeHybrid:     {ThroughputMbps: 1000, RTTMs: 10, PacketLoss: 1e-4},
}

var linkTypes = map[NetworkMode]pb.LinkType{ModeDatacenter: pb.LinkType_LINK_TYPE_DC,
	ModeInternet: pb.LinkType_LINK_TYPE_WAN, ModeHybrid: pb.LinkType_LINK_TYPE_METRO}

// Fallback is DWCP's rule for a payload, the chain's last source: it answers when neither the in-process
// model nor the service can (default DWCPRule).
type Fallback func(data []byte, mode NetworkMode) CompressionAlgorithm

// Option configures a selector. DWCP's constructor takes none; these are extra, trailing arguments.
type Option func(*CompressionSelector)

// WithClient makes the selector ask c (the caller keeps owning it: Close does not close it).
func WithClient(c inference.Client) Option {
	return func(cs *CompressionSelector) { cs.client, cs.owned = c, false }
}

// WithClientOptions passes options (target, TLS, timeouts...) to the client the selector makes.
func WithClientOptions(opts ...inference.Option) Option {
	return func(cs *CompressionSelector) { cs.clientOpts = append(cs.clientOpts, opts...) }
}

// WithFallback sets the rule that answers when no model can (default DWCPRule).
func WithFallback(f Fallback) Option { return func(cs *CompressionSelector) { cs.fallback = f } }

// WithModelPath runs the compression_selector at path (a repository, or a model or version directory)
// in-process through the registered local runtime (import the embedded package); NewCompressionSelector logs
// nothing and returns no error (DWCP's signature): LocalError says why it could not.
func WithModelPath(path string) Option { return func(cs *CompressionSelector) { cs.modelPath = path } }

// WithLocalCache runs the service's compression_selector versions in-process: synced from the service the
// selector asks (WithClientOptions' target, $DWCP_INFERENCE_TARGET or 127.0.0.1:50051) into dir, they answer
// first, the service second, DWCP's rule last, following the service's promotes and splits. The local runtime
// must be registered (import the embedded package); LocalError says why it could not open. The constructor
// waits a few seconds at most for the first sync (LocalConfig.SyncWait); until the model is in dir the service
// answers; while the service is down the cache answers, also after a restart. It replaces WithModelPath.
func WithLocalCache(dir string) Option { return func(cs *CompressionSelector) { cs.cacheDir = dir } }

// WithLocalConfig passes settings (the libonnxruntime path) to the local runtime.
func WithLocalConfig(cfg inference.LocalConfig) Option {
	return func(cs *CompressionSelector) { cs.localCfg = cfg }
}

// WithSourceOrder sets the sources asked and their order (default embedded, remote, rule).
func WithSourceOrder(order ...inference.Source) Option {
	return func(cs *CompressionSelector) { cs.order = append([]inference.Source(nil), order...) }
}

// WithChainMetrics counts answers and fallbacks into m (shared between drop-ins, registered once).
func WithChainMetrics(m *inference.ChainMetrics) Option {
	return func(cs *CompressionSelector) { cs.metrics = m }
}

// Selection is a choice and where it came from.
type Selection struct {
	Algorithm CompressionAlgorithm
	// Source is what chose: the model in-process or in the service, or DWCP's rule.
	Source       inference.Source
	FromFallback bool   // Source is the rule
	ModelVersion string // "compression_selector:<version>", or the rule's "rule:dwcp_v3" / "rule:small_data"
	Err          error  // why the sources before the rule could not answer, when FromFallback
}

// CompressionSelector picks a codec for each payload (DWCP's type and method set).
type CompressionSelector struct {
	client     inference.Client
	owned      bool
	clientOpts []inference.Option
	modelPath  string
	cacheDir   string
	localCfg   inference.LocalConfig
	local      inference.LocalRuntime
	localErr   error
	order      []inference.Source
	metrics    *inference.ChainMetrics
	chain      *inference.Chain
	fallback   Fallback
	fallbacks  atomic.Uint64

	mu     sync.RWMutex
	mode   NetworkMode
	config *SelectorConfig
	link   *Link
	stats  map[CompressionAlgorithm]*AlgorithmStats
}

// NewCompressionSelector returns a selector for links of mode. Its sources, tried in order for each payload:
// the model in-process (WithModelPath), the service (WithClient, else a client for WithClientOptions' target,
// $DWCP_INFERENCE_TARGET or 127.0.0.1:50051, connected lazily), then DWCP's rule (WithFallback).
func NewCompressionSelector(mode NetworkMode, config *SelectorConfig, opts ...Option) *CompressionSelector {
	if config == nil {
		config = DefaultSelectorConfig()
	}
	cs := &CompressionSelector{mode: mode, config: config, stats: map[CompressionAlgorithm]*AlgorithmStats{}}
	cs.fallback = cs.DWCPRule
	for _, o := range opts {
		o(cs)
	}
	if cs.metrics == nil {
		cs.metrics = inference.NewChainMetrics()
	}
	providers := []inference.Provider{{Source: inference.SourceRule, Answerer: selectorRule{cs: cs}}}
	if cs.client == nil {
		target := "127.0.0.1:50051"
		if t := os.Getenv(TargetEnv); t != "" {
			target = t
		}
		if c, err := inference.New(append([]inference.Option{inference.WithTarget(target)}, cs.clientOpts...)...); err == nil {
			cs.client, cs.owned = c, true
		}
	}
	localPath, localCfg := cs.modelPath, cs.localCfg
	if cs.cacheDir != "" && cs.client != nil {
		localPath = cs.cacheDir
		localCfg = localCfg.SyncedFrom(cs.client.Target(), cs.clientOpts, cs.cacheDir, "compression_selector")
	}
	if localPath != "" {
		if rt, err := inference.OpenLocal(localPath, localCfg); err != nil {
			cs.localErr = err
		} else {
			cs.local = rt
			providers = append(providers, inference.Provider{Source: inference.SourceEmbedded, Answerer: rt})
		}
	}
	if cs.client != nil {
		providers = append(providers, inference.Provider{Source: inference.SourceRemote, Answerer: inference.Remote(cs.client)})
	}
	chainOpts := []inference.ChainOption{inference.WithChainMetrics(cs.metrics)}
	if cs.order != nil {
		chainOpts = append(chainOpts, inference.WithOrder(cs.order...))
	}
	var err error
	if cs.chain, err = inference.NewChain(providers, chainOpts...); err != nil {
		// An order naming no source that exists: DWCP's rule alone, as DWCP's selector is.
		cs.chain, _ = inference.NewChain(providers[:1], inference.WithChainMetrics(cs.metrics))
	}
	return cs
}

// LocalError is why WithModelPath's model or WithLocalCache's runtime could not be opened (nil when it was, or none was asked).
func (cs *CompressionSelector) LocalError() error { return cs.localErr }

// Sources lists the sources asked for each payload, in order.
func (cs *CompressionSelector) Sources() []inference.Source { return cs.chain.Sources() }

// Metrics is the selector's answer and fallback counters, a prometheus.Collector to register.
func (cs *CompressionSelector) Metrics() *inference.ChainMetrics { return cs.metrics }

// UpdateLink records the link's measured state.
func (cs *CompressionSelector) UpdateLink(l Link) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.link = &l
}

// UpdateMode changes the selector's mode.
func (cs *CompressionSelector) UpdateMode(mode NetworkMode) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.mode = mode
}

// SelectCompression returns the algorithm predicted to be fastest for data on the link. Its signature has no
// error, as DWCP's has none: when no model can answer, DWCP's rule does (Select says which answered).
func (cs *CompressionSelector) SelectCompression(data []byte, mode NetworkMode) CompressionAlgorithm {
	return cs.Select(data, mode).Algorithm
}

type payloadKey struct{}

// Select is SelectCompression with the origin of the answer.
func (cs *CompressionSelector) Select(data []byte, mode NetworkMode) Selection {
	cs.mu.Lock()
	cs.mode = mode
	link := defaultLinks[mode]
	if cs.link != nil {
		link = *cs.link
	}
	small := cs.config.SmallDataSize
	cs.mu.Unlock()
	if len(data) < small {
		// DWCP's rule's first line: too small to be worth compressing, whatever the link.
		return Selection{Algorithm: CompressionNone, Source: inference.SourceRule, ModelVersion: "rule:small_data"}
	}
	lt, ok := linkTypes[mode]
	if !ok {
		lt = pb.LinkType_LINK_TYPE_WAN
	}
	sample := data
	if len(sample) > SampleBytes {
		sample = sample[:SampleBytes]
	}
	var trace inference.Trace
	ctx := inference.WithTrace(context.WithValue(context.Background(), payloadKey{}, data), &trace)
	resp, source, err := cs.chain.SelectCompression(ctx, &pb.SelectCompressionRequest{
		Link:    &pb.LinkState{ThroughputMbps: link.ThroughputMbps, RttMs: link.RTTMs, LinkType: lt, PacketLoss: link.PacketLoss},
		Payload: &pb.PayloadTraits{SizeBytes: int64(len(data)), Sample: sample}})
	var skipped []error
	for _, s := range trace.Skipped {
		skipped = append(skipped, fmt.Errorf("%s: %w", s.Source, s.Err))
	}
	if err != nil {
		// Not even the rule answered (an order without it): DWCP's rule all the same, as the signature has
		// no error.
		cs.fallbacks.Add(1)
		return Selection{Algorithm: cs.fallback(data, mode), Source: inference.SourceRule, FromFallback: true,
			ModelVersion: "rule:dwcp_v3", Err: errors.Join(append(skipped, err)...)}
	}
	sel := Selection{Algorithm: CompressionAlgorithm(inference.Algorithm(resp.GetDecision().GetChoice())),
		Source: source, ModelVersion: resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion()}
	if source == inference.SourceRule {
		cs.fallbacks.Add(1)
		sel.FromFallback, sel.Err = true, errors.Join(skipped...)
	}
	return sel
}

// RecordPerformance records how an algorithm did on a payload (moving averages weighted by LearningRate);
// GetStats reports them.
func (cs *CompressionSelector) RecordPerformance(algo CompressionAlgorithm, originalSize int, compressedSize int,
	duration time.Duration) {
	if originalSize <= 0 || compressedSize <= 0 || duration <= 0 {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	s := cs.stats[algo]
	if s == nil {
		s = &AlgorithmStats{}
		cs.stats[algo] = s
	}
	ratio := float64(originalSize) / float64(compressedSize)
	speed := float64(originalSize) / (1 << 20) / duration.Seconds()
	if s.UseCount == 0 {
		s.AverageRatio, s.AverageSpeed = ratio, speed
	} else {
		a := cs.config.LearningRate
		s.AverageRatio, s.AverageSpeed = a*ratio+(1-a)*s.AverageRatio, a*speed+(1-a)*s.AverageSpeed
	}
	s.TotalBytes += int64(originalSize)
	s.CompressedBytes += int64(compressedSize)
	s.TotalTime += duration
	s.UseCount++
	s.LastUsed = time.Now()
}

// GetStats returns the mode, the fallback count and the recorded performance per algorithm.
func (cs *CompressionSelector) GetStats() map[string]interface{} {
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	algos := map[string]interface{}{}
	for algo, s := range cs.stats {
		algos[algo.String()] = map[string]interface{}{"use_count": s.UseCount, "average_ratio": s.AverageRatio,
			"average_speed": s.AverageSpeed, "last_used": s.LastUsed}
	}
	return map[string]interface{}{"mode": cs.mode.String(), "learning_enabled": cs.config.AdaptiveEnabled,
		"fallbacks": cs.fallbacks.Load(), "algorithms": algos}
}

// Fallbacks counts the selections DWCP's rule made (small payloads aside).
func (cs *CompressionSelector) Fallbacks() uint64 { return cs.fallbacks.Load() }

// Close releases the connection and runtime the selector opened.
func (cs *CompressionSelector) Close() error {
	var errs []error
	if cs.client != nil && cs.owned {
		errs = append(errs, cs.client.Close())
	}
	if cs.local != nil {
		errs = append(errs, cs.local.Close())
	}
	return errors.Join(errs...)
}

// DWCPHeuristic is a rule by mode alone: datacenter none, hybrid LZ4, internet Zstd.
//
// Deprecated: not DWCP's rule; the default Fallback is now CompressionSelector.DWCPRule, DWCP v3's own.
func DWCPHeuristic(_ []byte, mode NetworkMode) CompressionAlgorithm {
	switch mode {
	case ModeDatacenter:
		return CompressionNone
	case ModeHybrid:
		return CompressionLZ4
	}
	return CompressionZstd
}
