// Package consensus is a drop-in replacement for DWCP's consensus latency check, answered by the inference
// service's consensus_latency model. Only the import path changes.
package consensus

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/monitoring"
)

// Window is the number of samples the model judges (its metadata's window).
const Window = 20

// AnomalyDetector keeps the recent consensus samples of one cluster and asks the service about each window.
type AnomalyDetector struct {
	client     inference.Client
	deployment inference.ConsensusDeployment
	mu         sync.Mutex
	context    *pb.ConsensusSample // the latest full metrics given to Observe
	window     []*pb.ConsensusSample
	lastErr    error
}

// NewAnomalyDetector returns a detector for a cluster of the given deployment.
func NewAnomalyDetector(client inference.Client, deployment inference.ConsensusDeployment) *AnomalyDetector {
	return &AnomalyDetector{client: client, deployment: deployment,
		context: &pb.ConsensusSample{QueueDepth: 5, ProposalsPending: 3, ProposalsCommitted: 200, QuorumSize: 3,
			ActiveNodes: 5}}
}

// Observe adds a sample with the cluster's full consensus metrics. Later CheckConsensusLatency calls reuse its
// non-latency fields.
func (ad *AnomalyDetector) Observe(s *pb.ConsensusSample) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.context = s
	ad.push(s)
}

func (ad *AnomalyDetector) push(s *pb.ConsensusSample) {
	s.NetworkTier, s.DwcpMode, s.ConsensusType = ad.deployment.NetworkTier, ad.deployment.DWCPMode,
		ad.deployment.ConsensusType
	ad.window = append(ad.window, s)
	if len(ad.window) > Window {
		ad.window = ad.window[len(ad.window)-Window:]
	}
}

// CheckConsensusLatency adds a median consensus latency (p95 and p99 taken at their normal 2x and 3x) and
// returns an Anomaly when the window is a high-latency episode; nil while the window fills, when it is normal,
// or when the service cannot answer (see LastError).
func (ad *AnomalyDetector) CheckConsensusLatency(latencyMs float64) *monitoring.Anomaly {
	ad.mu.Lock()
	s := &pb.ConsensusSample{QueueDepth: ad.context.GetQueueDepth(), ProposalsPending: ad.context.GetProposalsPending(),
		ProposalsCommitted: ad.context.GetProposalsCommitted(), LatencyP50Ms: latencyMs, LatencyP95Ms: 2 * latencyMs,
		LatencyP99Ms: 3 * latencyMs, LeaderChanges: 0, QuorumSize: ad.context.GetQuorumSize(),
		ActiveNodes: ad.context.GetActiveNodes()}
	ad.push(s)
	if len(ad.window) < Window {
		ad.mu.Unlock()
		return nil
	}
	w := &pb.ConsensusWindow{Samples: append([]*pb.ConsensusSample(nil), ad.window...)}
	ad.mu.Unlock()
	resp, err := ad.client.DetectHighLatency(context.Background(), &pb.DetectHighLatencyRequest{Window: w})
	ad.mu.Lock()
	ad.lastErr = err
	ad.mu.Unlock()
	if err != nil || !resp.GetVerdict().GetIsHighLatency() {
		return nil
	}
	v := resp.GetVerdict()
	a := &monitoring.Anomaly{Timestamp: time.Now(), MetricName: "consensus_latency", Value: latencyMs,
		Expected: v.GetThreshold(), Deviation: v.GetReconstructionError() / v.GetThreshold(),
		Severity: monitoring.SeverityWarning, Confidence: 1 - 0.5*v.GetThreshold()/v.GetReconstructionError(),
		ModelType: resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion(),
		Context: map[string]interface{}{"reconstruction_error": v.GetReconstructionError(),
			"threshold": v.GetThreshold(), "prediction_id": v.GetPredictionId()}}
	if v.GetReconstructionError() > 3*v.GetThreshold() {
		a.Severity = monitoring.SeverityCritical
	}
	if fe := v.GetFeatureErrors(); len(fe) > 0 {
		a.Context["top_feature"] = fe[0].GetFeature()
	}
	a.Description = fmt.Sprintf("high consensus latency: %.1f ms, reconstruction error %.3g >= %.3g",
		latencyMs, v.GetReconstructionError(), v.GetThreshold())
	return a
}

// LastError is the error of the last call to the service, nil when it answered.
func (ad *AnomalyDetector) LastError() error {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	return ad.lastErr
}
