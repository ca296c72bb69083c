package prediction

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

func flatHistory(n int) []NetworkSample {
	h := make([]NetworkSample, n)
	start := time.Date(2026, 1, 6, 9, 0, 0, 0, time.UTC)
	for i := range h {
		h[i] = NetworkSample{Timestamp: start.Add(time.Duration(i) * time.Minute), BandwidthMbps: 500, LatencyMs: 20,
			PacketLoss: 0.001, JitterMs: 2, TimeOfDay: 9, DayOfWeek: 2}
	}
	return h
}

// A refused outcome report is counted and its error kept, not dropped.
func TestRefusedOutcomeIsCounted(t *testing.T) {
	p, err := NewLSTMPredictor(servertest.Target(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	pred, err := p.Predict(flatHistory(24))
	if err != nil {
		t.Fatal(err)
	}
	p.UpdateActual(pred.ValidUntil, NetworkSample{BandwidthMbps: 480})
	p.FlushOutcomes(ctx)
	if n, err := p.OutcomeErrors(); n != 0 || err != nil {
		t.Fatalf("an accepted outcome counted as an error: %d, %v", n, err)
	}
	if _, err := p.Predict(flatHistory(24)); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	last := len(p.ids) - 1
	p.ids[last] = p.ids[last][:len(p.ids[last])-4] + "AAAA" // as a replica with another key sees it
	p.mu.Unlock()
	p.UpdateActual(pred.ValidUntil, NetworkSample{BandwidthMbps: 480})
	p.FlushOutcomes(ctx)
	n, err := p.OutcomeErrors()
	if n != 1 || err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("a refused outcome: counted %d, error %v", n, err)
	}
}

// stalling answers PredictBandwidth at once and holds every ReportOutcome until release is closed.
type stalling struct {
	pb.UnimplementedInferenceServiceServer
	release  chan struct{}
	received chan struct{}
	once     sync.Once
}

func (s *stalling) PredictBandwidth(_ context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	return &pb.PredictBandwidthResponse{Model: &pb.ModelRef{Name: "bandwidth_predictor", Version: "1"},
		Prediction: &pb.BandwidthPrediction{PredictionId: "id-1", PredictedBandwidthMbps: 500, Confidence: 0.9}}, nil
}

func (s *stalling) ReportOutcome(ctx context.Context, _ *pb.ReportOutcomeRequest) (*pb.ReportOutcomeResponse, error) {
	s.once.Do(func() { close(s.received) })
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &pb.ReportOutcomeResponse{}, nil
}

// UpdateActual returns while the service still holds the outcome report: the report is sent in the background,
// and arrives once the service answers.
func TestUpdateActualDoesNotWaitForTheOutcomeReport(t *testing.T) {
	srv := &stalling{release: make(chan struct{}), received: make(chan struct{})}
	p, err := NewLSTMPredictor("", WithClient(servertest.Bufconn(t, srv)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pred, err := p.Predict(flatHistory(24))
	if err != nil {
		t.Fatal(err)
	}
	p.UpdateActual(pred.ValidUntil, NetworkSample{BandwidthMbps: 480})
	// Returned. Had it waited for the report, the call would have timed out: the service has not answered.
	<-srv.received
	if n, err := p.OutcomeErrors(); n != 0 || err != nil {
		t.Fatalf("UpdateActual waited for the report until it failed: %d, %v", n, err)
	}
	close(srv.release)
	if err := p.FlushOutcomes(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := p.OutcomeErrors(); n != 0 || err != nil {
		t.Fatalf("the report failed: %d, %v", n, err)
	}
	if m := p.GetMetrics(); m.InferenceCount != 1 || m.AvgPredictionError == 0 {
		t.Fatalf("the prediction was not judged: %+v", m)
	}
}

// Reports that cannot be queued are counted, never block.
func TestOutcomesBeyondTheQueueAreCounted(t *testing.T) {
	srv := &stalling{release: make(chan struct{}), received: make(chan struct{})}
	defer close(srv.release)
	p, err := NewLSTMPredictor("", WithClient(servertest.Bufconn(t, srv)))
	if err != nil {
		t.Fatal(err)
	}
	const n = 300 // the queue holds 256, and the sender holds one more
	for i := 0; i < n; i++ {
		pred, err := p.Predict(flatHistory(24))
		if err != nil {
			t.Fatal(err)
		}
		p.UpdateActual(pred.ValidUntil, NetworkSample{BandwidthMbps: 480})
	}
	<-srv.received
	dropped, err := p.OutcomeErrors()
	if dropped < n-256-1 || err == nil || !strings.Contains(err.Error(), "queue full") {
		t.Fatalf("%d of %d reports dropped, last error %v", dropped, n, err)
	}
}
