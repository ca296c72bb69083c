// Package encoding is a drop-in replacement for DWCP's compression selector
// (backend/core/network/dwcp/v3/encoding/ml_compression_selector.go): the same exported names, answered by the
// inference service's compression_selector. Only the import path changes, with one deviation: DWCP's
// NetworkMode lives in its upgrade package, which this module cannot import, so NetworkMode and its constants
// (ModeDatacenter = 0, ModeInternet = 1, ModeHybrid = 2, the same names and values) are declared here; a DWCP
// caller passes encoding.ModeInternet where it passed upgrade.ModeInternet (or converts: encoding.NetworkMode(m)).
package encoding

import (
	"context"
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

// Fallback answers when the service cannot.
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

// WithFallback sets what answers when the service cannot (default DWCPHeuristic).
func WithFallback(f Fallback) Option { return func(cs *CompressionSelector) { cs.fallback = f } }

// Selection is a choice and where it came from.
type Selection struct {
	Algorithm    CompressionAlgorithm
	FromFallback bool
	ModelVersion string // the model version that chose, or "fallback"
	Err          error  // why the service could not answer, when FromFallback
}

// CompressionSelector picks a codec for each payload (DWCP's type and method set).
type CompressionSelector struct {
	client     inference.Client
	owned      bool
	clientOpts []inference.Option
	fallback   Fallback
	fallbacks  atomic.Uint64

	mu     sync.RWMutex
	mode   NetworkMode
	config *SelectorConfig
	link   *Link
	stats  map[CompressionAlgorithm]*AlgorithmStats
}

// NewCompressionSelector returns a selector for links of mode. The service is the one WithClient gives, else
// the client made from WithClientOptions (its target, else $DWCP_INFERENCE_TARGET, else 127.0.0.1:50051).
// The connection is made lazily: a service that is down makes selections fall back, not this constructor.
func NewCompressionSelector(mode NetworkMode, config *SelectorConfig, opts ...Option) *CompressionSelector {
	if config == nil {
		config = DefaultSelectorConfig()
	}
	cs := &CompressionSelector{mode: mode, config: config, fallback: DWCPHeuristic,
		stats: map[CompressionAlgorithm]*AlgorithmStats{}}
	for _, o := range opts {
		o(cs)
	}
	if cs.client == nil {
		target := "127.0.0.1:50051"
		if t := os.Getenv(TargetEnv); t != "" {
			target = t
		}
		if c, err := inference.New(append([]inference.Option{inference.WithTarget(target)}, cs.clientOpts...)...); err == nil {
			cs.client, cs.owned = c, true
		}
	}
	return cs
}

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

// SelectCompression returns the algorithm the service predicts to be fastest for data on the link. Its
// signature has no error, as DWCP's has none: when the service cannot answer, the fallback does (Select says
// which answered).
func (cs *CompressionSelector) SelectCompression(data []byte, mode NetworkMode) CompressionAlgorithm {
	return cs.Select(data, mode).Algorithm
}

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
		return Selection{Algorithm: CompressionNone, ModelVersion: "rule:small_data"}
	}
	lt, ok := linkTypes[mode]
	if !ok {
		lt = pb.LinkType_LINK_TYPE_WAN
	}
	sample := data
	if len(sample) > SampleBytes {
		sample = sample[:SampleBytes]
	}
	var resp *pb.SelectCompressionResponse
	err := errNoClient
	if cs.client != nil {
		resp, err = cs.client.SelectCompression(context.Background(), &pb.SelectCompressionRequest{
			Link:    &pb.LinkState{ThroughputMbps: link.ThroughputMbps, RttMs: link.RTTMs, LinkType: lt, PacketLoss: link.PacketLoss},
			Payload: &pb.PayloadTraits{SizeBytes: int64(len(data)), Sample: sample}})
	}
	if err != nil {
		cs.fallbacks.Add(1)
		return Selection{Algorithm: cs.fallback(data, mode), FromFallback: true, ModelVersion: "fallback", Err: err}
	}
	return Selection{Algorithm: CompressionAlgorithm(inference.Algorithm(resp.GetDecision().GetChoice())),
		ModelVersion: resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion()}
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

// Fallbacks counts the selections made by the fallback rule.
func (cs *CompressionSelector) Fallbacks() uint64 { return cs.fallbacks.Load() }

// Close releases the connection the selector made.
func (cs *CompressionSelector) Close() error {
	if cs.client != nil && cs.owned {
		return cs.client.Close()
	}
	return nil
}

// DWCPHeuristic is a rule by mode: datacenter none, hybrid LZ4, internet Zstd.
func DWCPHeuristic(_ []byte, mode NetworkMode) CompressionAlgorithm {
	switch mode {
	case ModeDatacenter:
		return CompressionNone
	case ModeHybrid:
		return CompressionLZ4
	}
	return CompressionZstd
}

type noClientError struct{}

func (noClientError) Error() string { return "encoding: no client (the target could not be parsed)" }

var errNoClient error = noClientError{}
