package inference

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// OutcomesEnv lists the servers of TestOutcomesAcrossReplicas as FailoverEnv does; tests/test_failover.py starts
// three that share one outcome key and sets it.
const OutcomesEnv = "DWCP_OUTCOME_SERVERS"

var outcomeSeries = regexp.MustCompile(`(?m)^dwcp_inference_outcomes_total\{[^}]*\} ([0-9.e+]+)$`)

func outcomesCounted(t *testing.T, url string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, m := range outcomeSeries.FindAllSubmatch(body, -1) {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		sum += v
	}
	return sum
}

// TestOutcomesAcrossReplicas predicts round-robin over three replicas and reports every outcome through the same
// balanced client, so most reports reach a replica that did not make the prediction: every report must be
// accepted, and the replicas together must count each once.
func TestOutcomesAcrossReplicas(t *testing.T) {
	spec := os.Getenv(OutcomesEnv)
	if spec == "" {
		t.Skipf("%s is not set: run through tests/test_failover.py", OutcomesEnv)
	}
	t.Setenv(FailoverEnv, spec)
	servers := failoverServers(t)
	r := manual.NewBuilderWithScheme("outcomes")
	var addrs []resolver.Address
	for _, s := range servers {
		addrs = append(addrs, resolver.Address{Addr: s.addr})
	}
	r.InitialState(resolver.State{Addresses: addrs})
	c, err := New(WithTarget("outcomes:///servers"), WithTimeout(5*time.Second), WithDialOptions(grpc.WithResolvers(r)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	samples := make([]*pb.NetworkSample, 24)
	for i := range samples {
		samples[i] = &pb.NetworkSample{BandwidthMbps: 500, LatencyMs: 20, PacketLoss: 0.001, JitterMs: 2, TimeOfDay: 10, DayOfWeek: 2}
	}
	const n = 90
	ctx := context.Background()
	ids := make([]string, 0, n)
	for i := 0; i < n; i++ {
		resp, err := c.PredictBandwidth(ctx, &pb.PredictBandwidthRequest{History: &pb.LinkHistory{Samples: samples}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.GetPrediction().GetPredictionId())
	}
	for i, id := range ids {
		_, err := c.ReportOutcome(ctx, &pb.ReportOutcomeRequest{PredictionId: id,
			Outcome: &pb.ReportOutcomeRequest_ActualNetwork{ActualNetwork: &pb.NetworkSample{BandwidthMbps: 480}}})
		if err != nil {
			t.Fatalf("outcome %d of %d refused: %v", i+1, n, err)
		}
	}
	total, reached := 0.0, 0
	for _, s := range servers {
		got := outcomesCounted(t, s.metrics)
		t.Logf("server %s: %.0f outcomes, %.0f predictions", s.addr, got, answered(t, s.metrics))
		total += got
		if got > 0 {
			reached++
		}
	}
	if total != n {
		t.Fatalf("the replicas counted %.0f outcomes, %d were reported", total, n)
	}
	if reached < len(servers) {
		t.Fatalf("outcomes reached %d of %d replicas: the client did not balance", reached, len(servers))
	}
}
