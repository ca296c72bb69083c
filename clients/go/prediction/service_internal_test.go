package prediction

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

// fixed predicts 1000 Mbps, 40 ms, 5 ms jitter, 2% loss; the version answering is the label asked, or "1".
type fixed struct {
	pb.UnimplementedInferenceServiceServer
}

func (fixed) PredictBandwidth(_ context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	v := req.GetModel().GetLabel()
	if v == "" {
		v = "1"
	}
	bw := 1000.0
	if v == "canary" {
		bw = 900
	}
	return &pb.PredictBandwidthResponse{Model: &pb.ModelRef{Name: "bandwidth_predictor", Version: v},
		Prediction: &pb.BandwidthPrediction{PredictedBandwidthMbps: bw, PredictedLatencyMs: 40, PredictedJitterMs: 5,
			PredictedPacketLoss: 0.02, Confidence: 0.9}}, nil
}

func TestPredictionServiceSizesStreamsAndBuffersFromThePrediction(t *testing.T) {
	svc, err := NewPredictionService("", time.Minute, WithClient(servertest.Bufconn(t, fixed{})))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	if svc.GetOptimalStreamCount() != DefaultStreamCount || svc.GetOptimalBufferSize() != DefaultBufferSize {
		t.Fatal("defaults without a prediction")
	}
	if err := svc.UpdatePrediction(); !errors.Is(err, ErrNotEnoughSamples) {
		t.Fatalf("no samples: %v", err)
	}
	for _, s := range flatHistory(HistoryWindow) {
		svc.Collector().AddSample(s)
	}
	if err := svc.EnableABTesting("label=canary"); err != nil {
		t.Fatal(err)
	}
	if err := svc.UpdatePrediction(); err != nil {
		t.Fatal(err)
	}
	// BDP: 1000 Mbit/s = 125e6 B/s over 40 + 2*5 ms = 6.25e6 B.
	if got := svc.GetOptimalBufferSize(); got != 6250496 { // rounded up to 4 KiB
		t.Fatalf("buffer %d", got)
	}
	if got := svc.GetOptimalStreamCount(); got != 9 { // ceil(6.25e6 / 1 MiB) = 6, x1.5 at 2% loss
		t.Fatalf("streams %d", got)
	}
	next := flatHistory(HistoryWindow + 1)[HistoryWindow]
	next.BandwidthMbps = 920
	svc.Collector().AddSample(next)
	if err := svc.UpdatePrediction(); err != nil {
		t.Fatal(err)
	}
	ab := svc.GetABTestResults()
	if ab == nil || ab.PredictionCount != 2 || ab.WinningModel != "alternate" || ab.AlternateAccuracy <= ab.PrimaryAccuracy {
		t.Fatalf("A/B: %+v", ab)
	}
	path := filepath.Join(t.TempDir(), "samples.csv")
	if err := svc.Collector().ExportForTraining(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if lines := strings.Split(strings.TrimSpace(string(data)), "\n"); len(lines) != HistoryWindow+2 ||
		lines[0] != "link_id,timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms" {
		t.Fatalf("export:\n%s", data)
	}
}
