package prediction_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/prediction"
)

func TestMain(m *testing.M) { servertest.Main(m) }

func history(n int, bandwidth float64) []prediction.NetworkSample {
	start := time.Date(2026, 1, 6, 9, 0, 0, 0, time.UTC)
	out := make([]prediction.NetworkSample, n)
	for i := range out {
		ts := start.Add(time.Duration(i) * 5 * time.Minute)
		out[i] = prediction.NetworkSample{Timestamp: ts, BandwidthMbps: bandwidth + float64(i%5), LatencyMs: 20,
			PacketLoss: 0.001, JitterMs: 2, TimeOfDay: ts.Hour(), DayOfWeek: int(ts.Weekday()), NodeID: "a", PeerID: "b"}
	}
	return out
}

// The DWCP call site: predict, later report the actual sample, read the metrics.
func ExampleLSTMPredictor() {
	p, err := prediction.NewLSTMPredictor(servertest.Target(nil))
	if err != nil {
		panic(err)
	}
	defer p.Close()
	h := history(30, 500)
	pred, err := p.Predict(h)
	if err != nil {
		panic(err)
	}
	fmt.Println("version:", pred.ModelVersion[:len("bandwidth_predictor")])
	fmt.Println("plausible:", pred.PredictedBandwidthMbps > 100 && pred.PredictedBandwidthMbps < 2500)
	fmt.Println("valid after the last sample:", pred.ValidUntil.After(h[len(h)-1].Timestamp))
	p.UpdateActual(pred.ValidUntil, prediction.NetworkSample{Timestamp: pred.ValidUntil, BandwidthMbps: 500})
	m := p.GetMetrics()
	fmt.Println("inferences:", m.InferenceCount, "judged error < 50%:", m.MaxPredictionError < 0.5)
	// Output:
	// version: bandwidth_predictor
	// plausible: true
	// valid after the last sample: true
	// inferences: 1 judged error < 50%: true
}

func TestShortHistoryIsAnError(t *testing.T) {
	p, err := prediction.NewLSTMPredictor(servertest.Target(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Predict(history(3, 500)); err == nil {
		t.Fatal("a 3-sample history was accepted")
	}
	if p.GetMetrics().InferenceCount != 0 {
		t.Fatal("a failed call was counted")
	}
}

func TestReloadModelKeepsTheOldTargetOnFailure(t *testing.T) {
	p, err := prediction.NewLSTMPredictor(servertest.Target(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ReloadModel("127.0.0.1:1"); err == nil {
		t.Fatal("reload to a closed port succeeded")
	}
	if _, err := p.Predict(history(30, 500)); err != nil {
		t.Fatalf("the old connection was lost: %v", err)
	}
}

func TestFollowsTheLink(t *testing.T) {
	p, err := prediction.NewLSTMPredictor(servertest.Target(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	slow, err1 := p.Predict(history(30, 50))
	fast, err2 := p.Predict(history(30, 2000))
	if err1 != nil || err2 != nil || fast.PredictedBandwidthMbps < 5*slow.PredictedBandwidthMbps {
		t.Fatalf("slow %v fast %v (%v %v)", slow, fast, err1, err2)
	}
}

func TestClosedPredictorRefusesToPredict(t *testing.T) {
	p, err := prediction.NewLSTMPredictor(servertest.Target(t))
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := p.Predict(history(30, 500)); err == nil {
		t.Fatal("a closed predictor answered")
	}
}
