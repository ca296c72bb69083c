package prediction

import (
	"context"
	"errors"
	"fmt"
	"math"
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

// Fallback answers when the service cannot. Its prediction's ModelVersion should start with "fallback:".
type Fallback func(history []NetworkSample) (*BandwidthPrediction, error)

// LSTMPredictor predicts link bandwidth through the inference service (DWCP's type and method set; the model
// runs in the service, not in-process).
type LSTMPredictor struct {
	opts     options
	outcomes *outcomes.Queue

	mu        sync.Mutex
	client    inference.Client
	owned     bool // the predictor made client and closes it
	fallback  Fallback
	fallbacks uint64
	metrics   PredictorMetrics
	totalMs   float64
	records   []PredictionRecord
	ids       []string // prediction id of records[i], for the outcome report
}

// NewLSTMPredictor connects to the inference service (see the package comment for where it is) and checks
// that it serves bandwidth_predictor.
func NewLSTMPredictor(modelPath string, opts ...Option) (*LSTMPredictor, error) {
	p := &LSTMPredictor{opts: newOptions(opts), outcomes: outcomes.New()}
	if err := p.ReloadModel(modelPath); err != nil {
		p.outcomes.Close()
		return nil, err
	}
	return p, nil
}

// Predict predicts the next sample of the link whose recent samples (oldest first) are history.
func (p *LSTMPredictor) Predict(history []NetworkSample) (*BandwidthPrediction, error) {
	p.mu.Lock()
	client := p.client
	p.mu.Unlock()
	req := &pb.PredictBandwidthRequest{History: &pb.LinkHistory{Samples: make([]*pb.NetworkSample, len(history))}}
	for i, s := range history {
		req.History.Samples[i] = ToProto(s)
	}
	start := time.Now()
	var resp *pb.PredictBandwidthResponse
	err := errClosed
	if client != nil {
		resp, err = client.PredictBandwidth(context.Background(), req, p.opts.callOptions...)
	}
	if err != nil {
		p.mu.Lock()
		fallback := p.fallback
		if fallback != nil {
			p.fallbacks++
		}
		p.mu.Unlock()
		if fallback == nil {
			return nil, err
		}
		return fallback(history)
	}
	elapsed := float64(time.Since(start).Microseconds()) / 1000
	r := resp.GetPrediction()
	pred := &BandwidthPrediction{
		PredictedBandwidthMbps: r.GetPredictedBandwidthMbps(), PredictedLatencyMs: r.GetPredictedLatencyMs(),
		PredictedPacketLoss: r.GetPredictedPacketLoss(), PredictedJitterMs: r.GetPredictedJitterMs(),
		Confidence: r.GetConfidence(), ValidUntil: r.GetValidUntil().AsTime(),
		ModelVersion:   resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion(),
		PredictionTime: r.GetPredictionTime().AsTime(),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.metrics.InferenceCount++
	p.totalMs += elapsed
	p.metrics.AvgInferenceMs = p.totalMs / float64(p.metrics.InferenceCount)
	p.metrics.ModelVersion = pred.ModelVersion
	p.records = append(p.records, PredictionRecord{Timestamp: start, Predicted: *pred, Error: math.NaN(),
		InferenceTimeMs: elapsed})
	p.ids = append(p.ids, r.GetPredictionId())
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

// SetFallback makes f answer Predict when the service cannot (nil: return the service's error).
func (p *LSTMPredictor) SetFallback(f Fallback) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fallback = f
}

// Fallbacks counts the predictions the fallback made.
func (p *LSTMPredictor) Fallbacks() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fallbacks
}

// HarmonicMeanFallback predicts the harmonic mean of the last 5 bandwidths (as MPC video streaming does) and
// the last sample's latency, loss and jitter, with confidence 0.3, valid for interval after the last sample.
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

// ReloadModel points the predictor at the service for modelPath (see the package comment) and checks that it
// serves bandwidth_predictor; on failure the previous connection is kept. With WithClient, only the check.
func (p *LSTMPredictor) ReloadModel(modelPath string) error {
	client, owned := p.opts.client, false
	if client == nil {
		c, err := inference.New(append([]inference.Option{inference.WithTarget(p.opts.targetFor(modelPath))},
			p.opts.clientOpts...)...)
		if err != nil {
			return err
		}
		client, owned = c, true
	}
	if err := client.CheckHealth(context.Background(), "bandwidth_predictor"); err != nil {
		if owned {
			client.Close()
		}
		return fmt.Errorf("prediction: %s: %w", client.Target(), err)
	}
	p.mu.Lock()
	old, oldOwned := p.client, p.owned
	p.client, p.owned = client, owned
	p.metrics.LoadTime = time.Now()
	p.mu.Unlock()
	if old != nil && oldOwned && old != client {
		old.Close()
	}
	return nil
}

// Close sends the outcomes still queued (for at most 2 s) and releases the connection the predictor made.
func (p *LSTMPredictor) Close() {
	p.outcomes.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil && p.owned {
		p.client.Close()
	}
	p.client = nil
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
	return p.client != nil
}
