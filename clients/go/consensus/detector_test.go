package consensus_test

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/consensus"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

var normalState = consensus.ConsensusState{QueueDepth: 5, ProposalsPending: 3, ProposalsCommitted: 200,
	QuorumSize: 3, ActiveNodes: 5, LatencyP95Ms: 20, LatencyP99Ms: 30}

// closedPort names no server: every remote call fails with UNAVAILABLE.
var closedPort = consensus.WithTarget("127.0.0.1:1")

func TestStatisticalChecksFollowDWCPsRule(t *testing.T) {
	ad := consensus.NewAnomalyDetector(nil, nil, closedPort)
	defer ad.Close()
	var alerts atomic.Int32
	ad.RegisterAlertCallback(func(*consensus.Anomaly) { alerts.Add(1) })
	for i := 0; i < 30; i++ {
		if a := ad.CheckBandwidth(100 + float64(i%3)); a != nil {
			t.Fatalf("steady bandwidth flagged: %+v", a)
		}
	}
	drop := ad.CheckBandwidth(10)
	if drop == nil || drop.Metric != "bandwidth" || drop.Component != "amst" || drop.Deviation > -3 ||
		drop.Source != inference.SourceRule || drop.Confidence < 0.8 {
		t.Fatalf("a bandwidth collapse: %+v", drop)
	}
	// Within the cooldown the next anomaly is returned but not recorded again (DWCP's behaviour).
	if again := ad.CheckBandwidth(5); again == nil {
		t.Fatal("second collapse not returned")
	}
	if got := ad.GetAnomalies(time.Time{}); len(got) != 1 || got[0] != drop {
		t.Fatalf("recorded %d anomalies", len(got))
	}
	for i := 0; i < 15; i++ {
		ad.CheckLatency(20)
		ad.CheckCompressionRatio(3)
	}
	if ad.CheckLatency(5) != nil {
		t.Fatal("a latency drop flagged: DWCP flags the high side only")
	}
	stats := ad.GetAnomalyStats()
	if stats["total_anomalies"] != 1 || stats["bandwidth_anomalies"] != int64(1) {
		t.Fatalf("stats %v", stats)
	}
	if err := ad.ResolveAnomaly(0); err != nil || !ad.GetAnomalies(time.Time{})[0].Resolved {
		t.Fatalf("resolve: %v", err)
	}
	if ad.ResolveAnomaly(5) == nil {
		t.Fatal("an index out of range was resolved")
	}
	for deadline := time.Now().Add(5 * time.Second); alerts.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if alerts.Load() != 1 {
		t.Fatalf("%d alerts, want 1", alerts.Load())
	}
}

func TestConsensusLatencyWithoutTheClustersStateIsJudgedByTheRule(t *testing.T) {
	ad := consensus.NewAnomalyDetector(nil, zap.NewNop(), closedPort)
	defer ad.Close()
	for i := 0; i < 30; i++ {
		if a := ad.CheckConsensusLatency(10 + float64(i%2)); a != nil {
			t.Fatalf("steady rounds flagged: %+v", a)
		}
	}
	if src, err := ad.LastSource(); src != inference.SourceRule || err != nil {
		t.Fatalf("judged by %q: %v", src, err)
	}
	a := ad.CheckConsensusLatency(400)
	if a == nil || a.Source != inference.SourceRule || a.ModelVersion != "rule:dwcp_v3_statistical" || a.Imputed != nil {
		t.Fatalf("slow round: %+v", a)
	}
	// The model was never asked: it cannot judge a round without the cluster's state.
	if n := ad.Metrics().Fallbacks("DetectHighLatency", inference.SourceRemote, "unavailable"); n != 0 {
		t.Fatalf("the service was asked %v times", n)
	}
}

func TestConsensusLatencyFallsBackToTheRuleWhenTheServiceIsDown(t *testing.T) {
	ad := consensus.NewAnomalyDetector(nil, zap.NewNop(), closedPort,
		consensus.WithClientOptions(inference.WithRetries(1, time.Millisecond)))
	defer ad.Close()
	if got := ad.Sources(); !slices.Equal(got, []inference.Source{inference.SourceRemote, inference.SourceRule}) {
		t.Fatalf("sources %v", got)
	}
	ad.UpdateConsensusState(normalState)
	for i := 0; i < consensus.Window+5; i++ {
		ad.CheckConsensusLatency(10 + float64(i%2))
	}
	src, err := ad.LastSource()
	if src != inference.SourceRule || err != nil {
		t.Fatalf("judged by %q: %v", src, err)
	}
	if n := ad.Metrics().Fallbacks("DetectHighLatency", inference.SourceRemote, "unavailable"); n != 6 {
		t.Fatalf("remote fallbacks %v, want one per full window (6)", n)
	}
	if n := ad.Metrics().Answers("DetectHighLatency", inference.SourceRule); n != consensus.Window+5 {
		t.Fatalf("rule answers %v", n)
	}
}

func TestUnmeasuredStateIsListedNotMadeUp(t *testing.T) {
	ad := consensus.NewAnomalyDetector(nil, zap.NewNop(), consensus.WithTarget(servertest.Target(t)))
	defer ad.Close()
	state := normalState
	state.LatencyP95Ms, state.LatencyP99Ms = 0, 0 // not measured by this caller
	state.QueueDepth, state.ProposalsPending = 60, 40
	ad.UpdateConsensusState(state)
	var flagged *consensus.Anomaly
	for i := 0; i < consensus.Window; i++ {
		if a := ad.CheckConsensusLatency(900); a != nil {
			flagged = a
		}
	}
	if src, err := ad.LastSource(); src != inference.SourceRemote || err != nil {
		t.Fatalf("judged by %q: %v", src, err)
	}
	if flagged == nil || flagged.Source != inference.SourceRemote ||
		!slices.Equal(flagged.Imputed, []string{"latency_p95_ms", "latency_p99_ms"}) {
		t.Fatalf("anomaly %+v", flagged)
	}
}
