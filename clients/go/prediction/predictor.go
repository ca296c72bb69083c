package prediction

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/outcomes"
)

var errClosed = errors.New("prediction: predictor is closed")

// maxRecords bounds the predictions a predictor keeps (judged or waiting for their actual sample).
const maxRecords = 1024

// Fallback is DWCP's rule for a prediction, the chain's last source: it answers when neither the in-process
// model nor the service can. Its prediction's ModelVersion reads "<rule>:<variant>".
type Fallback func(history []NetworkSample) (*BandwidthPrediction, error)

// RuleValidity is how long a prediction of the default rule is valid after the last sample (DWCP's
// placeholder prediction's 15 minutes).
const RuleValidity = 15 * time.Minute

// LSTMPredictor predicts link bandwidth (DWCP's type and method set). Each prediction comes from the first of
// its sources that can answer (inference.Chain): the model in-process when modelPath names one on disk and a
// local runtime is registered (import the embedded package), the inference service when an option, modelPath
// or $DWCP_INFERENCE_TARGET names one, then DWCP's rule (SetFallback; default HarmonicMeanFallback). Every
// BandwidthPrediction says which source answered (Source).
type LSTMPredictor struct {
	opts     options
	outcomes *outcomes.Queue
	counters *inference.ChainMetrics

	mu        sync.Mutex
	chain     *inference.Chain // nil once closed
	client    inference.Client // the remote source, nil when there is none
	owned     bool             // the predictor made client and closes it
	local     inference.LocalRuntime
	fallback  Fallback
	fallbacks uint64
	metrics   PredictorMetrics
	totalMs   float64
	records   []PredictionRecord
	ids       []string // prediction id of records[i], for the outcome report
}

// NewLSTMPredictor opens the sources modelPath and the options name (see LSTMPredictor and ReloadModel).
func NewLSTMPredictor(modelPath string, opts ...Option) (*LSTMPredictor, error) {
	o := newOptions(opts)
	p := &LSTMPredictor{opts: o, outcomes: outcomes.New(), counters: o.metrics,
		fallback: HarmonicMeanFallback(RuleValidity)}
	if p.counters == nil {
		p.counters = inference.NewChainMetrics()
	}
	if err := p.ReloadModel(modelPath); err != nil {
		p.outcomes.Close()
		return nil, err
	}
	return p, nil
}

// Predict predicts the next sample of the link whose recent samples (oldest first) are history.
func (p *LSTMPredictor) Predict(history []NetworkSample) (*BandwidthPrediction, error) {
	p.mu.Lock()
	chain := p.chain
	p.mu.Unlock()
	if chain == nil {
		return nil, errClosed
	}
	req := &pb.PredictBandwidthRequest{History: &pb.LinkHistory{Samples: make([]*pb.NetworkSample, len(history))}}
	for i, s := range history {
		req.History.Samples[i] = ToProto(s)
	}
	start := time.Now()
	resp, source, err := chain.PredictBandwidth(context.Background(), req)
	if err != nil {
		return nil, err
	}
	elapsed := float64(time.Since(start).Microseconds()) / 1000
	r := resp.GetPrediction()
	pred := &BandwidthPrediction{
		PredictedBandwidthMbps: r.GetPredictedBandwidthMbps(), PredictedLatencyMs: r.GetPredictedLatencyMs(),
		PredictedPacketLoss: r.GetPredictedPacketLoss(), PredictedJitterMs: r.GetPredictedJitterMs(),
		Confidence: r.GetConfidence(), ValidUntil: r.GetValidUntil().AsTime(),
		ModelVersion:   resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion(),
		PredictionTime: r.GetPredictionTime().AsTime(), Source: source,
		LowerMbps: r.PredictedBandwidthP10Mbps, UpperMbps: r.PredictedBandwidthP90Mbps,
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if source == inference.SourceRule {
		p.fallbacks++
	}
	p.metrics.InferenceCount++
	p.totalMs += elapsed
	p.metrics.AvgInferenceMs = p.totalMs / float64(p.metrics.InferenceCount)
	p.metrics.ModelVersion = pred.ModelVersion
	p.records = append(p.records, PredictionRecord{Timestamp: start, Predicted: *pred, Error: math.NaN(),
		InferenceTimeMs: elapsed})
	p.ids = append(p.ids, r.GetPredictionId()) // only the service's answers have one
	if len(p.records) > maxRecords {
		p.records, p.ids = p.records[len(p.records)-maxRecords:], p.ids[len(p.ids)-maxRecords:]
	}
	return pred, nil
}

// UpdateActual reports the sample observed at timestamp. It judges the unjudged prediction whose ValidUntil
// is nearest to timestamp, updates GetMetrics, and queues the outcome for the service's live accuracy: the
// report is sent in the background, never on the caller's path (see OutcomeErrors).
func (p *LSTMPredictor) UpdateActual(timestamp time.Time, actual NetworkSample) {
	p.mu.Lock()
	best := -1
	for i := range p.records {
		if p.records[i].Actual != nil {
			continue
		}
		if best < 0 || absDuration(p.records[i].Predicted.ValidUntil.Sub(timestamp)) <
			absDuration(p.records[best].Predicted.ValidUntil.Sub(timestamp)) {
			best = i
		}
	}
	if best < 0 {
		p.mu.Unlock()
		return
	}
	rec := &p.records[best]
	rec.Actual = &actual
	if actual.BandwidthMbps > 0 {
		rec.Error = math.Abs(rec.Predicted.PredictedBandwidthMbps-actual.BandwidthMbps) / actual.BandwidthMbps
	}
	p.updateErrorsLocked()
	client, id := p.client, p.ids[best]
	p.mu.Unlock()
	// A sample of a link that is down (no bandwidth) cannot judge a relative error: the service refuses it.
	if client != nil && id != "" && actual.BandwidthMbps > 0 {
		p.outcomes.Report(client, &pb.ReportOutcomeRequest{PredictionId: id,
			Outcome: &pb.ReportOutcomeRequest_ActualNetwork{ActualNetwork: ToProto(actual)}})
	}
}

func (p *LSTMPredictor) updateErrorsLocked() {
	sum, n, worst := 0.0, 0, 0.0
	for _, r := range p.records {
		if r.Actual != nil && !math.IsNaN(r.Error) {
			sum += r.Error
			n++
			worst = math.Max(worst, r.Error)
		}
	}
	if n > 0 {
		p.metrics.AvgPredictionError = sum / float64(n)
		p.metrics.MaxPredictionError = worst
		p.metrics.Accuracy = math.Max(0, 1-p.metrics.AvgPredictionError)
	}
}

// OutcomeErrors counts the outcomes UpdateActual could not report to the service (refused, e.g. NOT_FOUND when
// the replica that answered does not share the outcome key of the one that predicted; or dropped because the
// queue was full or the predictor closed), and returns the last such error (nil when there was none).
func (p *LSTMPredictor) OutcomeErrors() (uint64, error) { return p.outcomes.Errors() }

// FlushOutcomes waits until the outcomes reported so far have been sent, or ctx ends.
func (p *LSTMPredictor) FlushOutcomes(ctx context.Context) error { return p.outcomes.Flush(ctx) }

// SetFallback sets DWCP's rule, the chain's last source (nil: none; calls the other sources cannot answer fail
// with their error).
func (p *LSTMPredictor) SetFallback(f Fallback) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fallback = f
}

// Fallbacks counts the predictions the rule made.
func (p *LSTMPredictor) Fallbacks() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fallbacks
}

// Metrics is the predictor's answer and fallback counters per source, a prometheus.Collector to register
// (WithChainMetrics shares one between drop-ins).
func (p *LSTMPredictor) Metrics() *inference.ChainMetrics { return p.counters }

// Sources lists the sources the predictor asks, in order.
func (p *LSTMPredictor) Sources() []inference.Source {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.chain == nil {
		return nil
	}
	return p.chain.Sources()
}

// HarmonicMeanFallback predicts the harmonic mean of the last 5 bandwidths (as MPC video streaming does) and
// the last sample's latency, loss and jitter, valid for interval after the last sample, with confidence 0.3:
// below the 0.5 under which DWCP's PredictionService.GetOptimalStreamCount uses its default stream count, as
// DWCP does when it has no prediction.
func HarmonicMeanFallback(interval time.Duration) Fallback {
	return func(history []NetworkSample) (*BandwidthPrediction, error) {
		if len(history) == 0 {
			return nil, fmt.Errorf("prediction: fallback needs at least one sample")
		}
		last := history[len(history)-1]
		tail := history[max(0, len(history)-5):]
		inv := 0.0
		for _, s := range tail {
			inv += 1 / math.Max(s.BandwidthMbps, 1e-9)
		}
		return &BandwidthPrediction{PredictedBandwidthMbps: float64(len(tail)) / inv, PredictedLatencyMs: last.LatencyMs,
			PredictedPacketLoss: last.PacketLoss, PredictedJitterMs: last.JitterMs, Confidence: 0.3,
			ValidUntil: last.Timestamp.Add(interval), ModelVersion: "fallback:harmonic_mean_5",
			PredictionTime: time.Now()}, nil
	}
}

// GetMetrics returns counts, client-side inference time and the errors of the predictions judged so far.
func (p *LSTMPredictor) GetMetrics() PredictorMetrics {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.metrics
}

// Records returns the predictions kept (at most the last 1024), oldest first; judged ones carry their Actual.
func (p *LSTMPredictor) Records() []PredictionRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]PredictionRecord(nil), p.records...)
}

// ReloadModel opens the sources for modelPath and swaps them in; on failure the previous ones are kept.
//
//   - modelPath on disk (a model repository, a model's or version's directory, or a version's model.onnx):
//     the model runs in-process through the registered local runtime; without one (the embedded package not
//     imported) this fails and says so.
//   - a service named by WithClient, WithTarget, a modelPath that is a gRPC target ("host:port",
//     "dns:///name:port") or $DWCP_INFERENCE_TARGET: it answers when the in-process model cannot, or alone.
//     Alone, it must serve bandwidth_predictor (health SERVING).
//   - a modelPath that does not exist and is no target (DWCP's "/models/bandwidth_lstm.onnx" left in a
//     caller's code) is an error unless a service is named; then the service answers alone.
//   - neither: the service at 127.0.0.1:50051.
//   - WithLocalCache(dir): the service's versions, synced into dir, run in-process before the service (a
//     modelPath on disk is then not opened).
//
// DWCP's rule answers last (SetFallback); WithSourceOrder changes the order.
func (p *LSTMPredictor) ReloadModel(modelPath string) error {
	s, err := p.open(modelPath)
	if err != nil {
		return err
	}
	p.mu.Lock()
	oldClient, oldOwned, oldLocal := p.client, p.owned, p.local
	p.chain, p.client, p.owned, p.local = s.chain, s.client, s.owned, s.local
	p.metrics.LoadTime = time.Now()
	p.mu.Unlock()
	if oldClient != nil && oldOwned && oldClient != s.client {
		oldClient.Close()
	}
	if oldLocal != nil {
		oldLocal.Close()
	}
	return nil
}

type sources struct {
	chain  *inference.Chain
	client inference.Client
	owned  bool
	local  inference.LocalRuntime
}

func (s sources) close() {
	if s.client != nil && s.owned {
		s.client.Close()
	}
	if s.local != nil {
		s.local.Close()
	}
}

func (p *LSTMPredictor) open(modelPath string) (s sources, err error) {
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	o := p.opts
	target := o.namedTarget(modelPath)
	serviceNamed := o.client != nil || target != "" || o.cacheDir != ""
	if modelPath != "" && !isTarget(modelPath) && o.cacheDir == "" {
		if _, statErr := os.Stat(modelPath); statErr == nil {
			if s.local, err = inference.OpenLocal(modelPath, o.local); err != nil {
				return s, fmt.Errorf("prediction: %w", err)
			}
		} else if !serviceNamed {
			return s, fmt.Errorf("prediction: model path: %w (or name a service with WithTarget or $%s)",
				statErr, TargetEnv)
		}
	}
	switch {
	case o.client != nil:
		s.client = o.client
	case target != "" || s.local == nil:
		if target == "" {
			target = "127.0.0.1:50051"
		}
		if s.client, err = inference.New(append([]inference.Option{inference.WithTarget(target)},
			o.clientOpts...)...); err != nil {
			return s, err
		}
		s.owned = true
	}
	if o.cacheDir != "" {
		cfg := o.local.SyncedFrom(s.client.Target(), o.clientOpts, o.cacheDir, "bandwidth_predictor")
		if s.local, err = inference.OpenLocal(o.cacheDir, cfg); err != nil {
			return s, fmt.Errorf("prediction: %w", err)
		}
	}
	if s.client != nil && s.local == nil {
		if err = s.client.CheckHealth(context.Background(), "bandwidth_predictor"); err != nil {
			return s, fmt.Errorf("prediction: %s: %w", s.client.Target(), err)
		}
	}
	providers := []inference.Provider{{Source: inference.SourceRule, Answerer: bandwidthRule{p: p}}}
	if s.local != nil {
		providers = append(providers, inference.Provider{Source: inference.SourceEmbedded, Answerer: s.local})
	}
	if s.client != nil {
		providers = append(providers, inference.Provider{Source: inference.SourceRemote,
			Answerer: inference.Remote(s.client, o.callOptions...)})
	}
	chainOpts := []inference.ChainOption{inference.WithChainMetrics(p.counters)}
	if o.order != nil {
		chainOpts = append(chainOpts, inference.WithOrder(o.order...))
	}
	if s.chain, err = inference.NewChain(providers, chainOpts...); err != nil {
		return s, fmt.Errorf("prediction: %w", err)
	}
	return s, nil
}

// Close sends the outcomes still queued (for at most 2 s) and releases the connection and runtime the
// predictor opened.
func (p *LSTMPredictor) Close() {
	p.outcomes.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	sources{client: p.client, owned: p.owned, local: p.local}.close()
	p.chain, p.client, p.local = nil, nil, nil
}

// ToProto converts a sample to its message.
func ToProto(s NetworkSample) *pb.NetworkSample {
	m := &pb.NetworkSample{BandwidthMbps: s.BandwidthMbps, LatencyMs: s.LatencyMs, PacketLoss: s.PacketLoss,
		JitterMs: s.JitterMs, TimeOfDay: int32(s.TimeOfDay), DayOfWeek: int32(s.DayOfWeek), NodeId: s.NodeID,
		PeerId: s.PeerID}
	if !s.Timestamp.IsZero() {
		m.Timestamp = timestamppb.New(s.Timestamp)
	}
	return m
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (p *LSTMPredictor) target() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		return ""
	}
	return p.client.Target()
}

func (p *LSTMPredictor) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.chain != nil
}
