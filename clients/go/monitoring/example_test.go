package monitoring_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/monitoring"
)

func TestMain(m *testing.M) { servertest.Main(m) }

// The DWCP call site: a Detector judging node metrics.
func ExampleInferenceDetector() {
	client, err := inference.New(inference.WithTarget(servertest.Target(nil)))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	var d monitoring.Detector = monitoring.NewInferenceDetector(client)
	ctx := context.Background()
	calm := &monitoring.MetricVector{Timestamp: time.Now(), Latency: 20, PacketLoss: 0.001, CPUUsage: 0.4,
		MemoryUsage: 0.45, ErrorRate: 0.004}
	a, err := d.Detect(ctx, calm)
	fmt.Println("calm:", a == nil, err)
	burst := *calm
	burst.ErrorRate = 0.2
	a, err = d.Detect(ctx, &burst)
	fmt.Println("burst:", a != nil, err, a.MetricName, a.Severity >= monitoring.SeverityWarning)
	// Output:
	// calm: true <nil>
	// burst: true <nil> error_rate true
}

func TestTrainSaysItTrainsNothing(t *testing.T) {
	d := monitoring.NewInferenceDetector(inference.NewFromClient(nil))
	if err := d.Train(context.Background(), []*monitoring.MetricVector{{Latency: 20}}); !errors.Is(err, monitoring.ErrTrainedOffline) {
		t.Fatalf("Train returned %v, want ErrTrainedOffline", err)
	}
	if d.Name() == "" {
		t.Fatal("no name")
	}
}

func TestToSliceOrder(t *testing.T) {
	m := monitoring.MetricVector{Bandwidth: 1, Latency: 2, PacketLoss: 3, Jitter: 4, CPUUsage: 5, MemoryUsage: 6, ErrorRate: 7}
	for i, v := range m.ToSlice() {
		if v != float64(i+1) {
			t.Fatalf("ToSlice()[%d] = %v", i, v)
		}
	}
}

// A dns:/// target balances round-robin over every address the name resolves to (a headless Service).
func TestDNSTargetWithRoundRobin(t *testing.T) {
	_, port, err := net.SplitHostPort(servertest.Target(t))
	if err != nil {
		t.Fatal(err)
	}
	client, err := inference.New(inference.WithTarget("dns:///127.0.0.1:" + port))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	d := monitoring.NewInferenceDetector(client)
	if _, err := d.Detect(context.Background(), &monitoring.MetricVector{Latency: 20, CPUUsage: 0.4, MemoryUsage: 0.45}); err != nil {
		t.Fatal(err)
	}
}

func TestFallbackDetectorAnswersWhenTheServiceIsDown(t *testing.T) {
	client, _ := inference.New(inference.WithTarget("127.0.0.1:1"), inference.WithRetries(1, 0))
	defer client.Close()
	d := monitoring.NewInferenceDetector(client)
	d.Fallback = &monitoring.ThresholdDetector{}
	normal := []*monitoring.MetricVector{{Latency: 20}, {Latency: 22}}
	if err := d.Train(context.Background(), normal); !errors.Is(err, monitoring.ErrTrainedOffline) {
		t.Fatal(err)
	}
	a, err := d.Detect(context.Background(), &monitoring.MetricVector{Latency: 100, CPUUsage: 0.3})
	if err != nil || a == nil || a.ModelType != "fallback:static_threshold" || a.MetricName != "latency" {
		t.Fatalf("got %+v, %v", a, err)
	}
	if d.Fallbacks() != 1 || a.Context["source"] != inference.SourceRule {
		t.Fatalf("fallbacks %d, source %v", d.Fallbacks(), a.Context["source"])
	}
	// Without a Fallback, DWCP's thresholds answer: its 500 ms latency limit before any training.
	plain := monitoring.NewInferenceDetector(client)
	if a, err := plain.Detect(context.Background(), &monitoring.MetricVector{Latency: 600}); err != nil || a == nil ||
		a.MetricName != "latency" || a.Context["source"] != inference.SourceRule {
		t.Fatalf("default rule: %+v, %v", a, err)
	}
	if n := plain.Metrics().Fallbacks("DetectAnomaly", inference.SourceRemote, "unavailable"); n != 1 {
		t.Fatalf("remote fallbacks counted %v", n)
	}
}
