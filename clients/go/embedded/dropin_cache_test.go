package embedded

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/consensus"
	"github.com/dwcp/inference/clients/go/encoding"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/monitoring"
	"github.com/dwcp/inference/clients/go/prediction"
)

func linkHistory() []prediction.NetworkSample {
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var h []prediction.NetworkSample
	for i := 0; i < 24; i++ {
		h = append(h, prediction.NetworkSample{Timestamp: start.Add(time.Duration(i) * 5 * time.Second),
			BandwidthMbps: 480 + float64(i), LatencyMs: 21, PacketLoss: 0.001, JitterMs: 2, TimeOfDay: 8,
			DayOfWeek: 2})
	}
	return h
}

// dropIns are a selector and a predictor that name only the service and a cache directory.
func dropIns(t *testing.T, target, cache string) (*encoding.CompressionSelector, *prediction.LSTMPredictor) {
	t.Helper()
	cs := encoding.NewCompressionSelector(encoding.ModeInternet, nil,
		encoding.WithClientOptions(inference.WithTarget(target)), encoding.WithLocalCache(cache))
	t.Cleanup(func() { cs.Close() })
	if err := cs.LocalError(); err != nil {
		t.Fatal(err)
	}
	p, err := prediction.NewLSTMPredictor("", prediction.WithTarget(target), prediction.WithLocalCache(cache))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return cs, p
}

// checkEmbedded fails unless both drop-ins answer in-process, as the service does (want: the service's answers).
func checkEmbedded(t *testing.T, when string, cs *encoding.CompressionSelector, p *prediction.LSTMPredictor,
	wantSel encoding.Selection, wantPred *prediction.BandwidthPrediction) {
	t.Helper()
	sel := cs.Select(jsonPayload(8192), encoding.ModeInternet)
	if sel.Source != inference.SourceEmbedded || sel.Algorithm != wantSel.Algorithm ||
		sel.ModelVersion != wantSel.ModelVersion {
		t.Fatalf("%s: the selector answered %+v; want %v from %s in-process", when, sel, wantSel.Algorithm,
			wantSel.ModelVersion)
	}
	pred, err := p.Predict(linkHistory())
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if pred.Source != inference.SourceEmbedded || pred.ModelVersion != wantPred.ModelVersion ||
		math.Abs(pred.PredictedBandwidthMbps-wantPred.PredictedBandwidthMbps) > 1e-5 ||
		math.Abs(pred.Confidence-wantPred.Confidence) > 1e-5 {
		t.Fatalf("%s: the predictor answered %+v; want the service's %+v from embedded", when, pred, wantPred)
	}
}

// Drop-ins given a service target and WithLocalCache answer in-process with the service's versions and
// answers, keep doing so when the service dies, and start again from the cache while it is still down.
func TestDropInsWithALocalCacheRunTheServiceVersionsInProcess(t *testing.T) {
	needLibrary(t)
	server := servertest.Start(t)
	cache := t.TempDir()

	remoteSel := encoding.NewCompressionSelector(encoding.ModeInternet, nil,
		encoding.WithClientOptions(inference.WithTarget(server.Addr())),
		encoding.WithSourceOrder(inference.SourceRemote))
	defer remoteSel.Close()
	wantSel := remoteSel.Select(jsonPayload(8192), encoding.ModeInternet)
	if wantSel.Source != inference.SourceRemote {
		t.Fatalf("the service did not answer: %+v", wantSel)
	}
	remotePred, err := prediction.NewLSTMPredictor("", prediction.WithTarget(server.Addr()),
		prediction.WithSourceOrder(inference.SourceRemote))
	if err != nil {
		t.Fatal(err)
	}
	defer remotePred.Close()
	wantPred, err := remotePred.Predict(linkHistory())
	if err != nil {
		t.Fatal(err)
	}

	cs, p := dropIns(t, server.Addr(), cache)
	checkEmbedded(t, "with the service up", cs, p, wantSel, wantPred)

	server.Kill()
	checkEmbedded(t, "with the service killed", cs, p, wantSel, wantPred)

	cs2, p2 := dropIns(t, server.Addr(), cache)
	checkEmbedded(t, "started again with the service down", cs2, p2, wantSel, wantPred)
}

// The node and consensus detectors given WithLocalCache also answer in-process with the service's versions.
func TestDetectorsWithALocalCacheAnswerInProcess(t *testing.T) {
	needLibrary(t)
	target := servertest.Target(t)
	cache := t.TempDir()

	nodes, err := monitoring.NewIsolationForestModel("", zap.NewNop(),
		monitoring.WithClientOptions(inference.WithTarget(target)), monitoring.WithLocalCache(cache))
	if err != nil {
		t.Fatal(err)
	}
	defer nodes.Close()
	if _, err := nodes.Detect(context.Background(), &monitoring.MetricVector{Latency: 20, PacketLoss: 0.001,
		CPUUsage: 0.4, MemoryUsage: 0.45, ErrorRate: 0.01}); err != nil {
		t.Fatal(err)
	}
	if n := nodes.Metrics().Answers("DetectAnomaly", inference.SourceEmbedded); n != 1 {
		t.Fatalf("embedded answered %v of 1 node call (sources %v)", n, nodes.Sources())
	}

	ad := consensus.NewAnomalyDetector(nil, zap.NewNop(), consensus.WithTarget(target),
		consensus.WithLocalCache(cache))
	defer ad.Close()
	ad.UpdateConsensusState(consensus.ConsensusState{QueueDepth: 5, ProposalsPending: 3, ProposalsCommitted: 200,
		QuorumSize: 3, ActiveNodes: 5, LatencyP95Ms: 20, LatencyP99Ms: 30})
	for i := 0; i < consensus.Window+2; i++ {
		ad.CheckConsensusLatency(10 + float64(i%2))
	}
	if src, err := ad.LastSource(); src != inference.SourceEmbedded || err != nil {
		t.Fatalf("consensus judged by %q (%v), want embedded", src, err)
	}
	for _, model := range []string{AnomalyModel, LatencyModel} {
		if missing := missingModels(cache, []string{model}); len(missing) > 0 {
			t.Fatalf("%s not in the shared cache", model)
		}
	}
}

// The four drop-ins with WithLocalCache on one cache directory hold one watch of the service between them (one
// of its --max-watchers slots), not one each; it stays while any of them is open and ends with the last Close.
func TestDropInsOnOneCacheShareOneWatch(t *testing.T) {
	needLibrary(t)
	server := servertest.StartWithMetrics(t)
	target, cache := server.Addr(), t.TempDir()
	watches := func(n float64) func() bool {
		return func() bool { return server.Metric("dwcp_inference_open_watches") == n }
	}

	cs, p := dropIns(t, target, cache)
	nodes, err := monitoring.NewAnomalyDetector(nil, zap.NewNop(),
		monitoring.WithClientOptions(inference.WithTarget(target)), monitoring.WithLocalCache(cache))
	if err != nil {
		t.Fatal(err)
	}
	latency := consensus.NewAnomalyDetector(nil, zap.NewNop(), consensus.WithTarget(target),
		consensus.WithLocalCache(cache))
	servertest.Eventually(t, "one watch for four drop-ins", watches(1))
	if missing := missingModels(cache, Models); len(missing) > 0 {
		t.Fatalf("%v not synced into the shared cache", missing)
	}

	if err := errors.Join(cs.Close(), nodes.Close(), latency.Close()); err != nil {
		t.Fatal(err)
	}
	if n := server.Metric("dwcp_inference_open_watches"); n != 1 {
		t.Fatalf("%v watches with one drop-in still open, want 1", n)
	}
	if pred, err := p.Predict(linkHistory()); err != nil || pred.Source != inference.SourceEmbedded {
		t.Fatalf("the predictor left open answered %+v, %v; want an embedded answer", pred, err)
	}
	p.Close()
	servertest.Eventually(t, "no watch once the last drop-in is closed", watches(0))
}
