package prediction

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"
)

// HistoryWindow is the number of recent samples each prediction is made from (the bandwidth model's window).
const HistoryWindow = 24

// Defaults of GetOptimalStreamCount and GetOptimalBufferSize when there is no usable prediction.
const (
	DefaultStreamCount = 4
	DefaultBufferSize  = 64 << 10
)

// ErrNotEnoughSamples is returned by UpdatePrediction while the collector holds fewer than HistoryWindow samples.
var ErrNotEnoughSamples = errors.New("prediction: fewer samples than the model's window")

// PredictionService keeps a current bandwidth prediction for one link, from the samples of its DataCollector,
// renewed every update interval (DWCP's type and method set, which DWCP's AMST asks for stream counts and
// buffer sizes). Feed its samples through Collector().
type PredictionService struct {
	opts           options
	updateInterval time.Duration
	predictor      *LSTMPredictor
	collector      *DataCollector

	mu         sync.RWMutex
	current    *BandwidthPrediction
	history    []PredictionHistoryEntry
	cancel     context.CancelFunc
	alternate  *LSTMPredictor
	ab         *ABTestResults
	lastJudged time.Time
}

const maxServiceHistory = 1000

// NewPredictionService connects a predictor (as NewLSTMPredictor(modelPath, opts...)) and makes a collector
// keeping 10,000 samples.
func NewPredictionService(modelPath string, updateInterval time.Duration, opts ...Option) (*PredictionService, error) {
	p, err := NewLSTMPredictor(modelPath, opts...)
	if err != nil {
		return nil, fmt.Errorf("prediction: failed to create predictor: %w", err)
	}
	return &PredictionService{opts: newOptions(opts), updateInterval: updateInterval, predictor: p,
		collector: NewDataCollector(time.Minute, 10000)}, nil
}

// Collector is where the service's samples come from: AddSample, or SetSampler before Start.
func (s *PredictionService) Collector() *DataCollector { return s.collector }

// Predictor is the service's primary predictor.
func (s *PredictionService) Predictor() *LSTMPredictor { return s.predictor }

// Start starts the collector and renews the prediction every update interval until ctx ends or Stop.
func (s *PredictionService) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return fmt.Errorf("prediction service already started")
	}
	if s.updateInterval <= 0 {
		return fmt.Errorf("prediction: update interval must be positive, got %v", s.updateInterval)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.collector.Start()
	go func() {
		ticker := time.NewTicker(s.updateInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				s.UpdatePrediction() // a failed round keeps the previous prediction
			}
		}
	}()
	return nil
}

// UpdatePrediction judges earlier predictions against the newest sample, then predicts from the last
// HistoryWindow samples (with the alternate model too when A/B testing). Start calls it every interval.
func (s *PredictionService) UpdatePrediction() error {
	samples := s.collector.GetRecentSamples(HistoryWindow)
	if len(samples) < HistoryWindow {
		return ErrNotEnoughSamples
	}
	s.judge(samples[len(samples)-1])
	start := time.Now()
	pred, err := s.predictor.Predict(samples)
	if err != nil {
		return err
	}
	latency := time.Since(start)
	s.mu.Lock()
	s.current = pred
	s.history = append(s.history, PredictionHistoryEntry{Prediction: *pred, Error: math.NaN(), Timestamp: time.Now()})
	if len(s.history) > maxServiceHistory {
		s.history = s.history[len(s.history)-maxServiceHistory:]
	}
	alternate := s.alternate
	s.mu.Unlock()
	if alternate == nil {
		return nil
	}
	start = time.Now()
	_, altErr := alternate.Predict(samples)
	altLatency := time.Since(start)
	s.mu.Lock()
	defer s.mu.Unlock()
	if altErr == nil && s.ab != nil {
		n := time.Duration(s.ab.PredictionCount)
		s.ab.PrimaryLatency = (s.ab.PrimaryLatency*n + latency) / (n + 1)
		s.ab.AlternateLatency = (s.ab.AlternateLatency*n + altLatency) / (n + 1)
		s.ab.PredictionCount++
	}
	return altErr
}

// judge gives the newest sample, once, to the predictors and to the history entries it comes after.
func (s *PredictionService) judge(latest NetworkSample) {
	s.mu.Lock()
	if !latest.Timestamp.After(s.lastJudged) {
		s.mu.Unlock()
		return
	}
	s.lastJudged = latest.Timestamp
	for i := range s.history {
		h := &s.history[i]
		if h.Actual == nil && !h.Prediction.ValidUntil.After(latest.Timestamp) && latest.BandwidthMbps > 0 {
			actual := latest
			h.Actual = &actual
			h.Error = math.Abs(h.Prediction.PredictedBandwidthMbps-latest.BandwidthMbps) / latest.BandwidthMbps
		}
	}
	alternate := s.alternate
	s.mu.Unlock()
	s.predictor.UpdateActual(latest.Timestamp, latest)
	if alternate == nil {
		return
	}
	alternate.UpdateActual(latest.Timestamp, latest)
	primary, alt := s.predictor.GetMetrics(), alternate.GetMetrics()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ab != nil {
		s.ab.PrimaryAccuracy, s.ab.AlternateAccuracy = primary.Accuracy, alt.Accuracy
		switch {
		case primary.Accuracy == 0 && alt.Accuracy == 0:
		case alt.Accuracy > primary.Accuracy:
			s.ab.WinningModel = "alternate"
		default:
			s.ab.WinningModel = "primary"
		}
	}
}

// GetPrediction returns a copy of the current prediction, nil before the first.
func (s *PredictionService) GetPrediction() *BandwidthPrediction {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.current == nil {
		return nil
	}
	p := *s.current
	return &p
}

// bdpBytes is the bandwidth-delay product of a prediction, the delay being the latency plus twice the jitter.
func bdpBytes(p *BandwidthPrediction) float64 {
	return p.PredictedBandwidthMbps * 1e6 / 8 * (p.PredictedLatencyMs + 2*p.PredictedJitterMs) / 1000
}

// GetOptimalStreamCount is our rule, not a model: one stream per MiB of the predicted bandwidth-delay product
// (bdpBytes), half again as many when the predicted loss is 1% or more (parallel streams recover from loss
// faster than one), within 2..16. DefaultStreamCount without a prediction or below confidence 0.5.
func (s *PredictionService) GetOptimalStreamCount() int {
	p := s.GetPrediction()
	if p == nil || p.Confidence < 0.5 {
		return DefaultStreamCount
	}
	streams := math.Ceil(bdpBytes(p) / (1 << 20))
	if p.PredictedPacketLoss >= 0.01 {
		streams = math.Ceil(streams * 1.5)
	}
	return int(min(16, max(2, streams)))
}

// GetOptimalBufferSize is our rule, not a model: the predicted bandwidth-delay product (bdpBytes) rounded up
// to 4 KiB, within 16 KiB..16 MiB. DefaultBufferSize without a prediction.
func (s *PredictionService) GetOptimalBufferSize() int {
	p := s.GetPrediction()
	if p == nil {
		return DefaultBufferSize
	}
	size := math.Ceil(bdpBytes(p)/4096) * 4096
	return int(min(16<<20, max(16<<10, size)))
}

// EnableABTesting predicts with an alternate model beside the primary one; GetABTestResults compares them.
// alternateModelPath is "label=NAME" or "version=N" (another version of the same service), or a modelPath as
// NewLSTMPredictor takes (another service).
func (s *PredictionService) EnableABTesting(alternateModelPath string) error {
	opts := []Option{func(o *options) { *o = s.opts; o.callOptions = nil }}
	path := alternateModelPath
	switch {
	case strings.HasPrefix(path, "label="):
		opts, path = append(opts, WithModelLabel(strings.TrimPrefix(path, "label="))), ""
	case strings.HasPrefix(path, "version="):
		opts, path = append(opts, WithModelVersion(strings.TrimPrefix(path, "version="))), ""
	}
	if path == "" && s.opts.target == "" && s.opts.client == nil {
		opts = append(opts, WithTarget(s.predictor.target()))
	}
	alt, err := NewLSTMPredictor(path, opts...)
	if err != nil {
		return fmt.Errorf("prediction: failed to load alternate model: %w", err)
	}
	s.mu.Lock()
	old := s.alternate
	s.alternate, s.ab = alt, &ABTestResults{TestStartTime: time.Now()}
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// GetABTestResults returns a copy of the A/B comparison, nil when A/B testing is off.
func (s *PredictionService) GetABTestResults() *ABTestResults {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ab == nil {
		return nil
	}
	r := *s.ab
	r.TestDuration = time.Since(r.TestStartTime)
	return &r
}

// ExportMetrics writes the service's state (predictor metrics, collector statistics, the current prediction,
// A/B results, accuracy of the judged predictions) to outputPath as JSON.
func (s *PredictionService) ExportMetrics(outputPath string) error {
	s.mu.RLock()
	m := map[string]interface{}{"prediction_count": len(s.history), "collector_stats": s.collector.GetStatistics(),
		"predictor_metrics": s.predictor.GetMetrics()}
	if s.current != nil {
		m["current_prediction"] = s.current
	}
	if s.ab != nil {
		m["ab_test_results"] = s.ab
	}
	sum, n := 0.0, 0
	for _, h := range s.history {
		if h.Actual != nil {
			sum += h.Error
			n++
		}
	}
	s.mu.RUnlock()
	if n > 0 {
		m["average_error"], m["accuracy"] = sum/float64(n), 1-sum/float64(n)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(outputPath, data, 0o644)
}

// Stop ends the updates and the collector and closes the predictors.
func (s *PredictionService) Stop() error {
	s.mu.Lock()
	cancel, alternate := s.cancel, s.alternate
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.collector.Stop()
	s.predictor.Close()
	if alternate != nil {
		alternate.Close()
	}
	return nil
}

// IsRunning reports whether the service was started and not stopped.
func (s *PredictionService) IsRunning() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cancel != nil && s.predictor.running()
}
