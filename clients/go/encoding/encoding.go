// Package encoding is a drop-in replacement for DWCP's compression selector, answered by the inference
// service's compression_selector. Only the import path changes.
package encoding

import (
	"context"
	"sync"
	"sync/atomic"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// NetworkMode is the DWCP transport mode of a link.
type NetworkMode int

const (
	ModeDatacenter NetworkMode = iota
	ModeInternet
	ModeHybrid
)

// CompressionAlgorithm is a codec and level class, numbered as DWCP numbers them.
type CompressionAlgorithm int

const (
	None    CompressionAlgorithm = inference.AlgorithmNone
	LZ4     CompressionAlgorithm = inference.AlgorithmLZ4
	Zstd    CompressionAlgorithm = inference.AlgorithmZstd
	ZstdMax CompressionAlgorithm = inference.AlgorithmZstdMax
	Brotli  CompressionAlgorithm = inference.AlgorithmBrotli
)

// SampleBytes of a payload are sent for the service to estimate its entropy and compressibility.
const SampleBytes = 4096

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

// Selection is a choice and where it came from.
type Selection struct {
	Algorithm    CompressionAlgorithm
	FromFallback bool
	ModelVersion string // the model version that chose, or "fallback"
	Err          error  // why the service could not answer, when FromFallback
}

// CompressionSelector picks a codec for each payload.
type CompressionSelector struct {
	client    *inference.Client
	fallback  Fallback
	mu        sync.Mutex
	link      *Link
	fallbacks atomic.Uint64
}

// NewCompressionSelector returns a selector using client; when the service cannot answer, fallback does
// (nil: DWCPHeuristic).
func NewCompressionSelector(client *inference.Client, fallback Fallback) *CompressionSelector {
	if fallback == nil {
		fallback = DWCPHeuristic
	}
	return &CompressionSelector{client: client, fallback: fallback}
}

// UpdateLink records the link's measured state.
func (cs *CompressionSelector) UpdateLink(l Link) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.link = &l
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
	link := defaultLinks[mode]
	if cs.link != nil {
		link = *cs.link
	}
	cs.mu.Unlock()
	lt, ok := linkTypes[mode]
	if !ok {
		lt = pb.LinkType_LINK_TYPE_WAN
	}
	sample := data
	if len(sample) > SampleBytes {
		sample = sample[:SampleBytes]
	}
	resp, err := cs.client.SelectCompression(context.Background(), &pb.SelectCompressionRequest{
		Link:    &pb.LinkState{ThroughputMbps: link.ThroughputMbps, RttMs: link.RTTMs, LinkType: lt, PacketLoss: link.PacketLoss},
		Payload: &pb.PayloadTraits{SizeBytes: int64(len(data)), Sample: sample}})
	if err != nil {
		cs.fallbacks.Add(1)
		return Selection{Algorithm: cs.fallback(data, mode), FromFallback: true, ModelVersion: "fallback", Err: err}
	}
	return Selection{Algorithm: CompressionAlgorithm(inference.Algorithm(resp.GetDecision().GetChoice())),
		ModelVersion: resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion()}
}

// Fallbacks counts the selections made by the fallback rule.
func (cs *CompressionSelector) Fallbacks() uint64 { return cs.fallbacks.Load() }

// DWCPHeuristic is DWCP's rule by mode: datacenter none, hybrid LZ4, internet Zstd.
func DWCPHeuristic(_ []byte, mode NetworkMode) CompressionAlgorithm {
	switch mode {
	case ModeDatacenter:
		return None
	case ModeHybrid:
		return LZ4
	}
	return Zstd
}
