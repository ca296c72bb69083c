package monitoring

import (
	"context"
	"testing"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

// recording answers DetectAnomaly with an anomaly and keeps the metrics it was sent.
type recording struct {
	pb.UnimplementedInferenceServiceServer
	got chan *pb.NodeMetrics
}

func (r *recording) DetectAnomaly(_ context.Context, req *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	r.got <- req.GetMetrics()
	return &pb.DetectAnomalyResponse{Model: &pb.ModelRef{Name: "reliability_detector", Version: "1"},
		Verdict: &pb.AnomalyVerdict{IsAnomaly: true, Score: 2, Threshold: 1, Severity: pb.Severity_SEVERITY_WARNING,
			Contributions: []*pb.FeatureContribution{{Feature: "error_rate", Value: 0.3, Expected: 0.004, Deviation: 9}}}}, nil
}

// Detect sends what the MetricVector carries and nothing else: no p99 made from the latency, no baseline
// values for the fields it lacks; the answer names the fields that were not measured.
func TestDetectSendsOnlyWhatTheCallerGave(t *testing.T) {
	srv := &recording{got: make(chan *pb.NodeMetrics, 1)}
	d := NewInferenceDetector(servertest.Bufconn(t, srv))
	m := &MetricVector{Timestamp: time.Unix(1e9, 0), Bandwidth: 900, Latency: 20, PacketLoss: 0.001, Jitter: 3,
		CPUUsage: 0.4, MemoryUsage: 0.45, ErrorRate: 0.3}
	a, err := d.Detect(context.Background(), m)
	if err != nil || a == nil {
		t.Fatalf("%v, %v", a, err)
	}
	sent := <-srv.got
	want := &pb.NodeMetrics{ErrorRate: 0.3, LatencyP50Ms: 20, PacketLossRate: 0.001, CpuUsage: 0.4, MemoryUsage: 0.45}
	sent.Timestamp = nil
	if sent.String() != want.String() {
		t.Fatalf("sent %v\nwant %v", sent, want)
	}
	if u, _ := a.Context["unmeasured_fields"].([]string); len(u) != 5 || a.MetricName != "error_rate" {
		t.Fatalf("anomaly %+v", a)
	}
	// This server has no ModelDistribution service: no metadata says what to send, and the answer says so.
	imputed, _ := a.Context["imputed"].([]ImputedField)
	if len(imputed) != 5 || imputed[1].Field != "latency_p99_ms" || imputed[1].Value != 0 || imputed[1].How != NoMetadata {
		t.Fatalf("imputed %+v", a.Context["imputed"])
	}
}

func TestAnomalyDetectorRunsTheServiceModel(t *testing.T) {
	srv := &recording{got: make(chan *pb.NodeMetrics, 1)}
	ad, err := NewAnomalyDetector(nil, nil, WithClient(servertest.Bufconn(t, srv)))
	if err != nil {
		t.Fatal(err)
	}
	found, err := ad.Detect(context.Background(), &MetricVector{ErrorRate: 0.3})
	if err != nil || len(found) != 1 || found[0].ModelType != "reliability_detector:1" {
		t.Fatalf("%v, %v", found, err)
	}
	ad.Disable()
	if found, _ := ad.Detect(context.Background(), &MetricVector{ErrorRate: 0.3}); found != nil {
		t.Fatal("a disabled detector detected")
	}
	if r := ad.DetectAnomaly("packet_loss", 1.5); r.IsAnomaly {
		t.Fatal("a disabled detector judged a value")
	}
	ad.Enable()
	if r := ad.DetectAnomaly("packet_loss", 1.5); !r.IsAnomaly || r.Severity != SeverityCritical {
		t.Fatalf("loss 1.5 (150%%) passed: %+v", r)
	}
}
