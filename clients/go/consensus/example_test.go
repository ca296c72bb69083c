package consensus_test

import (
	"fmt"
	"testing"

	"github.com/dwcp/inference/clients/go/consensus"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

func TestMain(m *testing.M) { servertest.Main(m) }

// The DWCP call site: check each consensus round's latency.
func ExampleAnomalyDetector_CheckConsensusLatency() {
	client, err := inference.New(inference.WithTarget(servertest.Target(nil)))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	ad := consensus.NewAnomalyDetector(client, inference.DefaultDeployment())
	flagged := 0
	for i := 0; i < consensus.Window; i++ {
		if ad.CheckConsensusLatency(10) != nil {
			flagged++
		}
	}
	fmt.Println("normal rounds flagged:", flagged, ad.LastError())
	var a interface{ String() string }
	for i := 0; i < consensus.Window; i++ {
		if an := ad.CheckConsensusLatency(900); an != nil {
			a = an.Severity
		}
	}
	fmt.Println("slow rounds flagged:", a != nil)
	// Output:
	// normal rounds flagged: 0 <nil>
	// slow rounds flagged: true
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
