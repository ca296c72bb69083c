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

// Flat layouts of ModelInferenceClient's slices.
const (
	// BandwidthSampleWidth values per sample, oldest sample first: bandwidth_mbps, latency_ms, packet_loss,
	// jitter_ms, time_of_day (hour), day_of_week (0 = Sunday).
	BandwidthSampleWidth = 6
	// CompressionWidth values: throughput_mbps, rtt_ms, packet_loss, link type (0 dc, 1 metro, 2 wan, 3 edge),
	// payload size_bytes, entropy in bits per byte, recent compression ratio.
	CompressionWidth = 7
	// AnomalyWidth values, in NodeMetrics order: error_rate, timeout_rate, latency_p50_ms, latency_p99_ms,
	// sla_violations, connection_failures, packet_loss_rate, cpu_usage, memory_usage, disk_io_mbps.
	AnomalyWidth = 10
	// ConsensusSampleWidth values per sample, oldest first: queue_depth, proposals_pending, proposals_committed,
	// latency_p50_ms, latency_p95_ms, latency_p99_ms, leader_changes, quorum_size, active_nodes. The
	// deployment (tier, mode, protocol) comes from ConsensusDeployment.
	ConsensusSampleWidth = 9
)

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
		h.Samples = append(h.Samples, &pb.NetworkSample{BandwidthMbps: v[0], LatencyMs: v[1], PacketLoss: v[2],
			JitterMs: v[3], TimeOfDay: int32(v[4]), DayOfWeek: int32(v[5])})
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
	lt := int(features[3])
	if lt < 0 || lt >= len(linkTypes) || float64(lt) != features[3] {
		return AlgorithmNone, fmt.Errorf("features[3]: expected a link type 0..3, got %v", features[3])
	}
	entropy, ratio := features[5], features[6]
	resp, err := f.c.SelectCompression(ctx, &pb.SelectCompressionRequest{
		Link: &pb.LinkState{ThroughputMbps: features[0], RttMs: features[1], PacketLoss: features[2],
			LinkType: linkTypes[lt]},
		Payload: &pb.PayloadTraits{SizeBytes: int64(features[4]), EntropyBitsPerByte: &entropy,
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
		ErrorRate: v[0], TimeoutRate: v[1], LatencyP50Ms: v[2], LatencyP99Ms: v[3], SlaViolations: v[4],
		ConnectionFailures: v[5], PacketLossRate: v[6], CpuUsage: v[7], MemoryUsage: v[8], DiskIoMbps: v[9]}})
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

// ConsensusSample builds one sample from ConsensusSampleWidth values in their documented order.
func ConsensusSample(v []float64, d ConsensusDeployment) *pb.ConsensusSample {
	return &pb.ConsensusSample{QueueDepth: v[0], ProposalsPending: v[1], ProposalsCommitted: v[2],
		LatencyP50Ms: v[3], LatencyP95Ms: v[4], LatencyP99Ms: v[5], LeaderChanges: v[6], QuorumSize: v[7],
		ActiveNodes: v[8], NetworkTier: d.NetworkTier, DwcpMode: d.DWCPMode, ConsensusType: d.ConsensusType}
}
