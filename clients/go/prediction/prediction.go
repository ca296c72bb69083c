// Package prediction is a drop-in replacement for DWCP's in-process bandwidth predictor: the same types and
// the same *LSTMPredictor method set, answered by the inference service. A DWCP service changes its import
// path to this package and nothing else.
package prediction

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// NetworkSample is one observation of a link (DWCP's type, verbatim).
type NetworkSample struct {
	Timestamp                                      time.Time
	BandwidthMbps, LatencyMs, PacketLoss, JitterMs float64
	TimeOfDay, DayOfWeek                           int
	NodeID, PeerID                                 string
}

// BandwidthPrediction is the predicted next sample of a link (DWCP's type, verbatim).
type BandwidthPrediction struct {
	PredictedBandwidthMbps, PredictedLatencyMs, PredictedPacketLoss, PredictedJitterMs, Confidence float64
	ValidUntil                                                                                     time.Time
	ModelVersion                                                                                   string
	PredictionTime                                                                                 time.Time
}

// PredictorMetrics summarises a predictor's use and accuracy (DWCP's type, verbatim).
type PredictorMetrics struct {
	ModelVersion                                                     string
	LoadTime                                                         time.Time
	InferenceCount                                                   uint64
	AvgInferenceMs, AvgPredictionError, MaxPredictionError, Accuracy float64
}

// PredictionRecord pairs a prediction with the sample that was then observed.
type PredictionRecord struct {
	Prediction BandwidthPrediction
	Actual     *NetworkSample
	// Error is |predicted - actual| / actual bandwidth, or NaN until the actual is known.
	Error float64
}

// TargetEnv names the environment variable read when NewLSTMPredictor is given a model file path.
const TargetEnv = "DWCP_INFERENCE_TARGET"

var errClosed = fmt.Errorf("prediction: predictor is closed")

// maxPending bounds the predictions kept waiting for their actual sample.
const maxPending = 1024

// Fallback answers when the service cannot. Its prediction's ModelVersion should start with "fallback:".
type Fallback func(history []NetworkSample) (*BandwidthPrediction, error)

// LSTMPredictor predicts link bandwidth through the inference service.
type LSTMPredictor struct {
	mu        sync.Mutex
	client    *inference.Client
	fallback  Fallback
	fallbacks uint64
	metrics   PredictorMetrics
	totalMs   float64
	errSum    float64
	errCount  int
	pending   []pending
	history   []PredictionRecord
	// outcomes the service refused or that could not be sent, and the last such error
	outcomeErrors  uint64
	lastOutcomeErr error
}

type pending struct {
	id     string
	record PredictionRecord
}

// NewLSTMPredictor connects to the inference service. modelPath is the service target ("host:port" or
// "dns:///name:port"); a path to a model file, as the in-process predictor took, means "the service named by
// $DWCP_INFERENCE_TARGET", or 127.0.0.1:50051 when that is unset.
func NewLSTMPredictor(modelPath string) (*LSTMPredictor, error) {
	p := &LSTMPredictor{}
	if err := p.ReloadModel(modelPath); err != nil {
		return nil, err
	}
	return p, nil
}

func target(modelPath string) string {
	if strings.Contains(modelPath, ":") && !strings.HasSuffix(modelPath, ".onnx") {
		return modelPath
	}
	if t := os.Getenv(TargetEnv); t != "" {
		return t
	}
	return "127.0.0.1:50051"
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
		resp, err = client.PredictBandwidth(context.Background(), req)
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
	p.pending = append(p.pending, pending{id: r.GetPredictionId(), record: PredictionRecord{Prediction: *pred,
		Error: math.NaN()}})
	if len(p.pending) > maxPending {
		p.pending = p.pending[len(p.pending)-maxPending:]
	}
	return pred, nil
}

// UpdateActual reports the sample observed at timestamp. It judges the pending prediction whose ValidUntil is
// nearest to timestamp, reports the outcome to the service (for its live accuracy) and updates GetMetrics.
func (p *LSTMPredictor) UpdateActual(timestamp time.Time, actual NetworkSample) {
	p.mu.Lock()
	best := -1
	for i, q := range p.pending {
		if best < 0 || absDuration(q.record.Prediction.ValidUntil.Sub(timestamp)) <
			absDuration(p.pending[best].record.Prediction.ValidUntil.Sub(timestamp)) {
			best = i
		}
	}
	if best < 0 {
		p.mu.Unlock()
		return
	}
	q := p.pending[best]
	p.pending = append(p.pending[:best], p.pending[best+1:]...)
	q.record.Actual = &actual
	if actual.BandwidthMbps > 0 {
		q.record.Error = math.Abs(q.record.Prediction.PredictedBandwidthMbps-actual.BandwidthMbps) / actual.BandwidthMbps
		p.errSum += q.record.Error
		p.errCount++
		p.metrics.AvgPredictionError = p.errSum / float64(p.errCount)
		p.metrics.MaxPredictionError = math.Max(p.metrics.MaxPredictionError, q.record.Error)
		p.metrics.Accuracy = math.Max(0, 1-p.metrics.AvgPredictionError)
	}
	p.history = append(p.history, q.record)
	if len(p.history) > maxPending {
		p.history = p.history[len(p.history)-maxPending:]
	}
	client := p.client
	p.mu.Unlock()
	// A sample of a link that is down (no bandwidth) cannot judge a relative error: the service refuses it.
	if client != nil && q.id != "" && actual.BandwidthMbps > 0 {
		// Not on the caller's path (UpdateActual returns nothing), but never lost silently: see OutcomeErrors.
		_, err := client.ReportOutcome(context.Background(), &pb.ReportOutcomeRequest{PredictionId: q.id,
			Outcome: &pb.ReportOutcomeRequest_ActualNetwork{ActualNetwork: ToProto(actual)}})
		if err != nil {
			p.mu.Lock()
			p.outcomeErrors++
			p.lastOutcomeErr = err
			p.mu.Unlock()
		}
	}
}

// OutcomeErrors counts the outcomes UpdateActual could not report to the service (refused, e.g. NOT_FOUND when
// the replica that answered does not share the outcome key of the one that predicted, or not sent), and returns
// the last such error (nil when there was none).
func (p *LSTMPredictor) OutcomeErrors() (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outcomeErrors, p.lastOutcomeErr
}

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

// GetMetrics returns counts, client-side inference time and the errors of predictions judged so far.
func (p *LSTMPredictor) GetMetrics() PredictorMetrics {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.metrics
}

// Records returns the judged predictions, oldest first (at most the last 1024).
func (p *LSTMPredictor) Records() []PredictionRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]PredictionRecord(nil), p.history...)
}

// ReloadModel points the predictor at a service target (see NewLSTMPredictor) and checks that the service
// answers health checks for the bandwidth model; on failure the previous connection is kept.
func (p *LSTMPredictor) ReloadModel(modelPath string) error {
	client, err := inference.New(inference.WithTarget(target(modelPath)))
	if err != nil {
		return err
	}
	if err := inference.CheckHealth(context.Background(), client, "bandwidth_predictor"); err != nil {
		client.Close()
		return fmt.Errorf("prediction: %s: %w", client.Target(), err)
	}
	p.mu.Lock()
	old := p.client
	p.client = client
	p.metrics.LoadTime = time.Now()
	p.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close releases the connection.
func (p *LSTMPredictor) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		p.client.Close()
		p.client = nil
	}
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
