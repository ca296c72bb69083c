package consensus_test

import (
	"fmt"
	"testing"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/consensus"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

func TestMain(m *testing.M) { servertest.Main(m) }

// The DWCP call site: check each consensus round's latency, with the cluster's measured state.
func ExampleAnomalyDetector_CheckConsensusLatency() {
	ad := consensus.NewAnomalyDetector(consensus.DefaultAnomalyDetectorConfig(), zap.NewNop(),
		consensus.WithTarget(servertest.Target(nil)))
	defer ad.Close()
	ad.UpdateConsensusState(consensus.ConsensusState{QueueDepth: 5, ProposalsPending: 3, ProposalsCommitted: 200,
		QuorumSize: 3, ActiveNodes: 5, LatencyP95Ms: 20, LatencyP99Ms: 30})
	flagged := 0
	for i := 0; i < consensus.Window; i++ {
		if ad.CheckConsensusLatency(10) != nil {
			flagged++
		}
	}
	source, err := ad.LastSource()
	fmt.Println("normal rounds flagged:", flagged, "judged by:", source, err)
	ad.UpdateConsensusState(consensus.ConsensusState{QueueDepth: 60, ProposalsPending: 40, ProposalsCommitted: 20,
		QuorumSize: 3, ActiveNodes: 5, LatencyP95Ms: 1800, LatencyP99Ms: 2700})
	var slow *consensus.Anomaly
	for i := 0; i < consensus.Window; i++ {
		if a := ad.CheckConsensusLatency(900); a != nil && slow == nil {
			slow = a
		}
	}
	fmt.Println("slow rounds flagged:", slow != nil, "by:", slow.Source, slow.Metric, slow.Component)
	// Output:
	// normal rounds flagged: 0 judged by: remote <nil>
	// slow rounds flagged: true by: remote consensus_latency acp
}

func TestFeaturesInterfaceAgainstTheServer(t *testing.T) {
	client, _ := inference.New(inference.WithTarget(servertest.Target(t)))
	defer client.Close()
	var m inference.ModelInferenceClient = client.Features(inference.DefaultDeployment())
	seq := make([]float64, 0, consensus.Window*inference.ConsensusSampleWidth)
	for i := 0; i < consensus.Window; i++ {
		seq = append(seq, 5, 3, 200, 10, 20, 30, 0, 3, 5)
	}
	high, err := m.DetectHighLatency(t.Context(), seq)
	if err != nil || high {
		t.Fatalf("normal window: %v %v", high, err)
	}
	bw := make([]float64, 0, 24*inference.BandwidthSampleWidth)
	for i := 0; i < 24; i++ {
		bw = append(bw, 500, 20, 0.001, 2, 10, 2)
	}
	if v, err := m.PredictBandwidth(t.Context(), bw); err != nil || v < 100 {
		t.Fatalf("bandwidth %v %v", v, err)
	}
	if alg, err := m.SelectCompression(t.Context(), []float64{20, 80, 0.001, 2, 1 << 20, 3.5, 0.2}); err != nil || alg == inference.AlgorithmNone {
		t.Fatalf("compressible payload on a slow WAN: %v %v", alg, err)
	}
	normal := []float64{0.004, 0.002, 20, 55, 0, 0, 0.001, 0.4, 0.45, 20}
	if anomalous, _, err := m.DetectAnomaly(t.Context(), normal); err != nil || anomalous {
		t.Fatalf("normal node: %v %v", anomalous, err)
	}
	if _, err := m.PredictBandwidth(t.Context(), bw[:12]); err == nil {
		t.Fatal("a 2-sample history was accepted")
	}
}
