package inference

import (
	"context"
	"fmt"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// ModelInferenceClient is the service-level interface the DWCP design asked for, verbatim. Its methods share
// names with Client's typed methods but take flat feature slices, so Go cannot put both on one type:
// Client.Features returns this view of the client.
type ModelInferenceClient interface {
	PredictBandwidth(ctx context.Context, features []float64) (float64, error)
	SelectCompression(ctx context.Context, features []float64) (int, error)
	DetectAnomaly(ctx context.Context, features []float64) (bool, float64, error)
	DetectHighLatency(ctx context.Context, sequence []float64) (bool, error)
}

// Flat layouts of ModelInferenceClient's slices: the widths (BandwidthSampleWidth, CompressionWidth,
// AnomalyWidth, ConsensusSampleWidth), the order of the values (BandwidthSampleFields, ...) and their valid ranges
// are generated from the service's model contracts (contract_gen.go, `make contracts`). Bandwidth and consensus
// slices hold one sample after another, oldest first; a consensus window's deployment (tier, mode, protocol)
// comes from ConsensusDeployment.

// Compression choices as DWCP's CompressionAlgorithm numbers them.
const (
	AlgorithmNone = iota
	AlgorithmLZ4
	AlgorithmZstd
	AlgorithmZstdMax
	AlgorithmBrotli
)

// Algorithm maps a choice of the service to DWCP's CompressionAlgorithm number: zstd up to level 9 is Zstd,
// above it ZstdMax.
func Algorithm(c *pb.CompressionChoice) int {
	switch c.GetCodec() {
	case pb.Codec_CODEC_LZ4:
		return AlgorithmLZ4
	case pb.Codec_CODEC_ZSTD:
		if c.GetLevel() > 9 {
			return AlgorithmZstdMax
		}
		return AlgorithmZstd
	case pb.Codec_CODEC_BROTLI:
		return AlgorithmBrotli
	}
	return AlgorithmNone
}

// ConsensusDeployment describes the cluster a consensus window comes from (values of the model's vocabulary).
type ConsensusDeployment struct{ NetworkTier, DWCPMode, ConsensusType string }

// DefaultDeployment is the deployment used when none is given: a tier-2 datacenter Raft cluster.
func DefaultDeployment() ConsensusDeployment {
	return ConsensusDeployment{NetworkTier: "tier2", DWCPMode: "datacenter", ConsensusType: "raft"}
}

// Features returns the client as a ModelInferenceClient; consensus windows are taken to come from deployment.
func (c *client) Features(deployment ConsensusDeployment) ModelInferenceClient {
	return featureClient{c: c, deployment: deployment}
}

type featureClient struct {
	c          Client
	deployment ConsensusDeployment
}

var linkTypes = []pb.LinkType{pb.LinkType_LINK_TYPE_DC, pb.LinkType_LINK_TYPE_METRO, pb.LinkType_LINK_TYPE_WAN,
	pb.LinkType_LINK_TYPE_EDGE}

func (f featureClient) PredictBandwidth(ctx context.Context, features []float64) (float64, error) {
	if len(features) == 0 || len(features)%BandwidthSampleWidth != 0 {
		return 0, fmt.Errorf("features: expected a multiple of %d values (one sample each), got %d",
			BandwidthSampleWidth, len(features))
	}
	h := &pb.LinkHistory{}
	for i := 0; i < len(features); i += BandwidthSampleWidth {
		v := features[i:]
		h.Samples = append(h.Samples, &pb.NetworkSample{BandwidthMbps: v[bandwidthSampleBandwidthMbps],
			LatencyMs: v[bandwidthSampleLatencyMs], PacketLoss: v[bandwidthSamplePacketLoss],
			JitterMs: v[bandwidthSampleJitterMs], TimeOfDay: int32(v[bandwidthSampleTimeOfDay]),
			DayOfWeek: int32(v[bandwidthSampleDayOfWeek])})
	}
	resp, err := f.c.PredictBandwidth(ctx, &pb.PredictBandwidthRequest{History: h})
	if err != nil {
		return 0, err
	}
	return resp.GetPrediction().GetPredictedBandwidthMbps(), nil
}

func (f featureClient) SelectCompression(ctx context.Context, features []float64) (int, error) {
	if len(features) != CompressionWidth {
		return AlgorithmNone, fmt.Errorf("features: expected %d values, got %d", CompressionWidth, len(features))
	}
	v := features
	lt := int(v[compressionLinkType])
	if lt < 0 || lt >= len(linkTypes) || float64(lt) != v[compressionLinkType] {
		return AlgorithmNone, fmt.Errorf("features[%d]: expected a link type 0..%d, got %v", compressionLinkType,
			len(linkTypes)-1, v[compressionLinkType])
	}
	entropy, ratio := v[compressionPayloadEntropy], v[compressionPayloadRatio]
	resp, err := f.c.SelectCompression(ctx, &pb.SelectCompressionRequest{
		Link: &pb.LinkState{ThroughputMbps: v[compressionThroughputMbps], RttMs: v[compressionRttMs],
			PacketLoss: v[compressionPacketLoss], LinkType: linkTypes[lt]},
		Payload: &pb.PayloadTraits{SizeBytes: int64(v[compressionSizeBytes]), EntropyBitsPerByte: &entropy,
			RecentCompressionRatio: &ratio}})
	if err != nil {
		return AlgorithmNone, err
	}
	return Algorithm(resp.GetDecision().GetChoice()), nil
}

func (f featureClient) DetectAnomaly(ctx context.Context, features []float64) (bool, float64, error) {
	if len(features) != AnomalyWidth {
		return false, 0, fmt.Errorf("features: expected %d values, got %d", AnomalyWidth, len(features))
	}
	v := features
	resp, err := f.c.DetectAnomaly(ctx, &pb.DetectAnomalyRequest{Metrics: &pb.NodeMetrics{
		ErrorRate: v[anomalyErrorRate], TimeoutRate: v[anomalyTimeoutRate], LatencyP50Ms: v[anomalyLatencyP50Ms],
		LatencyP99Ms: v[anomalyLatencyP99Ms], SlaViolations: v[anomalySlaViolations],
		ConnectionFailures: v[anomalyConnectionFailures], PacketLossRate: v[anomalyPacketLossRate],
		CpuUsage: v[anomalyCpuUsage], MemoryUsage: v[anomalyMemoryUsage], DiskIoMbps: v[anomalyDiskIoMbps]}})
	if err != nil {
		return false, 0, err
	}
	return resp.GetVerdict().GetIsAnomaly(), resp.GetVerdict().GetScore(), nil
}

func (f featureClient) DetectHighLatency(ctx context.Context, sequence []float64) (bool, error) {
	if len(sequence) == 0 || len(sequence)%ConsensusSampleWidth != 0 {
		return false, fmt.Errorf("sequence: expected a multiple of %d values (one sample each), got %d",
			ConsensusSampleWidth, len(sequence))
	}
	w := &pb.ConsensusWindow{}
	for i := 0; i < len(sequence); i += ConsensusSampleWidth {
		w.Samples = append(w.Samples, ConsensusSample(sequence[i:i+ConsensusSampleWidth], f.deployment))
	}
	resp, err := f.c.DetectHighLatency(ctx, &pb.DetectHighLatencyRequest{Window: w})
	if err != nil {
		return false, err
	}
	return resp.GetVerdict().GetIsHighLatency(), nil
}

// ConsensusSample builds one sample from ConsensusSampleWidth values in the order of ConsensusSampleFields.
func ConsensusSample(v []float64, d ConsensusDeployment) *pb.ConsensusSample {
	return &pb.ConsensusSample{QueueDepth: v[consensusSampleQueueDepth],
		ProposalsPending: v[consensusSampleProposalsPending], ProposalsCommitted: v[consensusSampleProposalsCommitted],
		LatencyP50Ms: v[consensusSampleLatencyP50Ms], LatencyP95Ms: v[consensusSampleLatencyP95Ms],
		LatencyP99Ms: v[consensusSampleLatencyP99Ms], LeaderChanges: v[consensusSampleLeaderChanges],
		QuorumSize: v[consensusSampleQuorumSize], ActiveNodes: v[consensusSampleActiveNodes],
		NetworkTier: d.NetworkTier, DwcpMode: d.DWCPMode, ConsensusType: d.ConsensusType}
}
