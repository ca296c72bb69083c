// Package consensus is a drop-in replacement for DWCP v3's anomaly detector
// (backend/core/network/dwcp/v3/monitoring/anomaly_detector.go), through which DWCP checks consensus latency:
// every exported name, field and method of that file, verbatim. One deviation: DWCP's import path is
// .../dwcp/v3/monitoring, ours is .../clients/go/consensus (our monitoring package already mirrors DWCP's
// older monitoring package, whose AnomalyDetector differs); a DWCP caller changes that import path and, where
// it names the package, monitoring.X to consensus.X.
//
// CheckConsensusLatency is answered by the consensus_latency model through an inference.Chain (in-process when
// WithModelPath names a model and a local runtime is registered, then the service, then DWCP's statistical
// rule); CheckBandwidth, CheckLatency and CheckCompressionRatio by DWCP's statistical rule, written here.
package consensus

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/inference"
)

// AnomalyDetector detects anomalies in DWCP v3 metrics (DWCP's type and method set).
type AnomalyDetector struct {
	mu sync.RWMutex

	config *AnomalyDetectorConfig

	bandwidthModel   *StatisticalModel
	latencyModel     *StatisticalModel
	compressionModel *StatisticalModel
	consensusModel   *StatisticalModel

	anomalies         []*Anomaly
	maxAnomalyHistory int

	alertCallbacks []AlertCallback

	logger *zap.Logger
	ctx    context.Context
	cancel context.CancelFunc

	model *consensusModel // the consensus_latency model's sources and window
}

// AnomalyDetectorConfig configures the detector (DWCP's type, verbatim).
type AnomalyDetectorConfig struct {
	// Detection thresholds (in standard deviations)
	BandwidthThreshold   float64
	LatencyThreshold     float64
	CompressionThreshold float64
	ConsensusThreshold   float64

	// Window sizes for moving averages
	ShortWindowSize int
	LongWindowSize  int

	// Alert settings
	EnableAlerts         bool
	AlertCooldownPeriod  time.Duration
	MinAnomalyConfidence float64 // 0-1
}

// StatisticalModel tracks a metric's recent samples and their statistics (DWCP's type, verbatim).
type StatisticalModel struct {
	mu sync.RWMutex

	Name string

	samples    []float64
	maxSamples int

	Mean   float64
	StdDev float64
	Min    float64
	Max    float64

	ShortMA float64
	LongMA  float64

	LastAnomaly  time.Time
	AnomalyCount int64
}

// Anomaly is a detected anomaly (DWCP's type; the fields after Resolved are additions saying what answered).
type Anomaly struct {
	Timestamp   time.Time
	Component   string
	Metric      string
	Value       float64
	Expected    float64
	Deviation   float64 // In standard deviations
	Confidence  float64 // 0-1
	Severity    string  // "low", "medium", "high", "critical"
	Description string
	Resolved    bool

	// Source is what judged: the consensus_latency model in-process or in the service, or DWCP's rule.
	Source inference.Source
	// ModelVersion is "consensus_latency:<version>" when a model judged, "rule:dwcp_v3_statistical" otherwise.
	ModelVersion string
	// Imputed lists the model inputs the caller did not measure (see ConsensusState), and Imputation what was
	// sent for each: the value, how it was derived (the version's metadata, or NoMetadata: sent as 0), the version.
	Imputed    []string
	Imputation []ImputedField
}

// AlertCallback is called when an anomaly is detected (DWCP's type).
type AlertCallback func(anomaly *Anomaly)

// NewAnomalyDetector returns a detector (DWCP's signature; opts, an addition, say where the consensus_latency
// model is: see Option). It never fails: a model that cannot be reached makes CheckConsensusLatency answer
// from DWCP's rule, and counts it (Metrics).
func NewAnomalyDetector(config *AnomalyDetectorConfig, logger *zap.Logger, opts ...Option) *AnomalyDetector {
	if config == nil {
		config = DefaultAnomalyDetectorConfig()
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	ad := &AnomalyDetector{
		config:            config,
		bandwidthModel:    newStatisticalModel("bandwidth", config.LongWindowSize),
		latencyModel:      newStatisticalModel("latency", config.LongWindowSize),
		compressionModel:  newStatisticalModel("compression", config.LongWindowSize),
		consensusModel:    newStatisticalModel("consensus", config.LongWindowSize),
		anomalies:         make([]*Anomaly, 0),
		maxAnomalyHistory: 1000,
		alertCallbacks:    make([]AlertCallback, 0),
		logger:            logger,
		ctx:               ctx,
		cancel:            cancel,
	}
	ad.model = newConsensusModel(ad, newOptions(opts), logger)
	go ad.cleanupLoop()
	return ad
}

// DefaultAnomalyDetectorConfig returns DWCP's defaults.
func DefaultAnomalyDetectorConfig() *AnomalyDetectorConfig {
	return &AnomalyDetectorConfig{
		BandwidthThreshold:   3.0,
		LatencyThreshold:     3.0,
		CompressionThreshold: 2.5,
		ConsensusThreshold:   2.5,
		ShortWindowSize:      10,
		LongWindowSize:       100,
		EnableAlerts:         true,
		AlertCooldownPeriod:  5 * time.Minute,
		MinAnomalyConfidence: 0.80,
	}
}

// statisticalCheck is DWCP's rule for one metric: the value's deviation from the recent mean, in standard
// deviations, over threshold (either side when twoSided) with enough confidence.
func (ad *AnomalyDetector) statisticalCheck(m *StatisticalModel, value, threshold float64, twoSided bool,
	component, metric, description string) *Anomaly {
	m.addSample(value)
	if !m.hasEnoughSamples() {
		return nil
	}
	deviation := m.calculateDeviation(value)
	over := deviation > threshold
	if twoSided {
		over = math.Abs(deviation) > threshold
	}
	if !over {
		return nil
	}
	confidence := ad.calculateConfidence(deviation, threshold)
	if confidence < ad.config.MinAnomalyConfidence {
		return nil
	}
	mean, sd := m.stats()
	anomaly := &Anomaly{Timestamp: time.Now(), Component: component, Metric: metric, Value: value, Expected: mean,
		Deviation: deviation, Confidence: confidence, Severity: ad.calculateSeverity(deviation),
		Description: fmt.Sprintf(description, value, mean, sd), Source: inference.SourceRule,
		ModelVersion: ruleVersion}
	ad.recordAnomaly(anomaly)
	return anomaly
}

// CheckBandwidth checks a throughput sample by DWCP's rule (3 sigma either side by default).
func (ad *AnomalyDetector) CheckBandwidth(throughputMbps float64) *Anomaly {
	return ad.statisticalCheck(ad.bandwidthModel, throughputMbps, ad.config.BandwidthThreshold, true, "amst",
		"bandwidth", "Bandwidth anomaly: %.2f Mbps (expected %.2f ± %.2f)")
}

// CheckLatency checks a latency sample by DWCP's rule (high side only).
func (ad *AnomalyDetector) CheckLatency(latencyMs float64) *Anomaly {
	return ad.statisticalCheck(ad.latencyModel, latencyMs, ad.config.LatencyThreshold, false, "amst", "latency",
		"Latency spike: %.2f ms (expected %.2f ± %.2f)")
}

// CheckCompressionRatio checks a compression ratio by DWCP's rule.
func (ad *AnomalyDetector) CheckCompressionRatio(ratio float64) *Anomaly {
	return ad.statisticalCheck(ad.compressionModel, ratio, ad.config.CompressionThreshold, false, "hde",
		"compression_ratio", "Compression ratio anomaly: %.2fx (expected %.2f ± %.2f)")
}

// CheckConsensusLatency checks a consensus round's latency: the consensus_latency model judges the window of
// the last Window rounds, with the cluster's state from UpdateConsensusState; until that state is given, or
// when no model source can answer, DWCP's statistical rule judges (2.5 sigma by default). It returns the
// anomaly, or nil; LastSource says what judged.
func (ad *AnomalyDetector) CheckConsensusLatency(latencyMs float64) *Anomaly {
	ad.consensusModel.addSample(latencyMs)
	anomaly := ad.model.check(latencyMs)
	if anomaly != nil {
		ad.recordAnomaly(anomaly)
	}
	return anomaly
}

// RegisterAlertCallback registers a callback for anomaly alerts.
func (ad *AnomalyDetector) RegisterAlertCallback(callback AlertCallback) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.alertCallbacks = append(ad.alertCallbacks, callback)
}

// recordAnomaly keeps an anomaly and alerts, unless its metric alerted within the cooldown (DWCP's rule).
func (ad *AnomalyDetector) recordAnomaly(anomaly *Anomaly) {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	model := ad.getModelForAnomaly(anomaly)
	if model != nil && time.Since(model.lastAnomaly()) < ad.config.AlertCooldownPeriod {
		ad.logger.Debug("Anomaly suppressed due to cooldown", zap.String("component", anomaly.Component),
			zap.String("metric", anomaly.Metric))
		return
	}
	ad.anomalies = append(ad.anomalies, anomaly)
	if len(ad.anomalies) > ad.maxAnomalyHistory {
		ad.anomalies = ad.anomalies[1:]
	}
	if model != nil {
		model.markAnomaly()
	}
	ad.logger.Warn("Anomaly detected", zap.String("component", anomaly.Component),
		zap.String("metric", anomaly.Metric), zap.Float64("value", anomaly.Value),
		zap.Float64("expected", anomaly.Expected), zap.Float64("deviation_sigma", anomaly.Deviation),
		zap.Float64("confidence", anomaly.Confidence), zap.String("severity", anomaly.Severity),
		zap.String("source", string(anomaly.Source)))
	if ad.config.EnableAlerts {
		for _, callback := range ad.alertCallbacks {
			go callback(anomaly)
		}
	}
}

func (ad *AnomalyDetector) getModelForAnomaly(anomaly *Anomaly) *StatisticalModel {
	switch anomaly.Metric {
	case "bandwidth":
		return ad.bandwidthModel
	case "latency":
		return ad.latencyModel
	case "compression_ratio":
		return ad.compressionModel
	case "consensus_latency":
		return ad.consensusModel
	}
	return nil
}

// calculateConfidence is 0.8 at the threshold, growing to 1 at twice it (DWCP's rule).
func (ad *AnomalyDetector) calculateConfidence(deviation, threshold float64) float64 {
	if deviation < threshold && -deviation < threshold {
		return 0.0
	}
	return math.Min(1, 0.8+0.2*((math.Abs(deviation)-threshold)/threshold))
}

// calculateSeverity grades a deviation in standard deviations (DWCP's rule).
func (ad *AnomalyDetector) calculateSeverity(deviation float64) string {
	switch d := math.Abs(deviation); {
	case d > 5.0:
		return "critical"
	case d > 4.0:
		return "high"
	case d > 3.0:
		return "medium"
	}
	return "low"
}

// GetAnomalies returns the anomalies recorded after since.
func (ad *AnomalyDetector) GetAnomalies(since time.Time) []*Anomaly {
	ad.mu.RLock()
	defer ad.mu.RUnlock()
	anomalies := make([]*Anomaly, 0)
	for _, anomaly := range ad.anomalies {
		if anomaly.Timestamp.After(since) {
			anomalies = append(anomalies, anomaly)
		}
	}
	return anomalies
}

// GetAnomalyStats counts the recorded anomalies by severity, component and metric (DWCP's keys), plus the
// consensus checks' answers per source ("consensus_sources", an addition).
func (ad *AnomalyDetector) GetAnomalyStats() map[string]interface{} {
	ad.mu.RLock()
	defer ad.mu.RUnlock()
	severityCounts := map[string]int{"low": 0, "medium": 0, "high": 0, "critical": 0}
	componentCounts := make(map[string]int)
	for _, anomaly := range ad.anomalies {
		severityCounts[anomaly.Severity]++
		componentCounts[anomaly.Component]++
	}
	return map[string]interface{}{
		"total_anomalies":        len(ad.anomalies),
		"severity_distribution":  severityCounts,
		"component_distribution": componentCounts,
		"bandwidth_anomalies":    ad.bandwidthModel.anomalyCount(),
		"latency_anomalies":      ad.latencyModel.anomalyCount(),
		"compression_anomalies":  ad.compressionModel.anomalyCount(),
		"consensus_anomalies":    ad.consensusModel.anomalyCount(),
		"consensus_sources":      ad.model.sourceCounts(),
	}
}

// ResolveAnomaly marks the anomaly at index (in GetAnomalies(time.Time{}) order) resolved.
func (ad *AnomalyDetector) ResolveAnomaly(index int) error {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	if index < 0 || index >= len(ad.anomalies) {
		return fmt.Errorf("invalid anomaly index: %d", index)
	}
	ad.anomalies[index].Resolved = true
	ad.logger.Info("Anomaly resolved", zap.Int("index", index), zap.String("component", ad.anomalies[index].Component),
		zap.String("metric", ad.anomalies[index].Metric))
	return nil
}

func (ad *AnomalyDetector) cleanupLoop() {
	ticker := time.NewTicker(time.Hour)
	defer ticker.Stop()
	for {
		select {
		case <-ad.ctx.Done():
			return
		case <-ticker.C:
			ad.cleanupOldAnomalies()
		}
	}
}

// cleanupOldAnomalies drops resolved anomalies older than a day (DWCP's rule).
func (ad *AnomalyDetector) cleanupOldAnomalies() {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	cutoff := time.Now().Add(-24 * time.Hour)
	kept := make([]*Anomaly, 0, len(ad.anomalies))
	for _, anomaly := range ad.anomalies {
		if anomaly.Timestamp.After(cutoff) || !anomaly.Resolved {
			kept = append(kept, anomaly)
		}
	}
	ad.anomalies = kept
}

// Close stops the detector and releases the connection and runtime it opened.
func (ad *AnomalyDetector) Close() error {
	ad.cancel()
	err := ad.model.close()
	ad.logger.Info("Anomaly detector closed")
	return err
}

func newStatisticalModel(name string, maxSamples int) *StatisticalModel {
	return &StatisticalModel{Name: name, samples: make([]float64, 0, maxSamples), maxSamples: maxSamples}
}

func (sm *StatisticalModel) addSample(value float64) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.samples = append(sm.samples, value)
	if len(sm.samples) > sm.maxSamples {
		sm.samples = sm.samples[1:]
	}
	sm.calculateStatistics()
}

// hasEnoughSamples: DWCP judges nothing before 10 samples.
func (sm *StatisticalModel) hasEnoughSamples() bool {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return len(sm.samples) >= 10
}

func (sm *StatisticalModel) calculateStatistics() {
	n := len(sm.samples)
	if n == 0 {
		return
	}
	sum := 0.0
	sm.Min, sm.Max = sm.samples[0], sm.samples[0]
	for _, v := range sm.samples {
		sum += v
		sm.Min, sm.Max = math.Min(sm.Min, v), math.Max(sm.Max, v)
	}
	sm.Mean = sum / float64(n)
	variance := 0.0
	for _, v := range sm.samples {
		variance += (v - sm.Mean) * (v - sm.Mean)
	}
	sm.StdDev = math.Sqrt(variance / float64(n))
	sm.ShortMA = mean(sm.samples[max(0, n-10):])
	sm.LongMA = mean(sm.samples[max(0, n-100):])
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// calculateDeviation is value's distance from the mean in standard deviations (0 while they are all equal).
func (sm *StatisticalModel) calculateDeviation(value float64) float64 {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	if sm.StdDev == 0 {
		return 0
	}
	return (value - sm.Mean) / sm.StdDev
}

func (sm *StatisticalModel) stats() (mean, sd float64) {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.Mean, sm.StdDev
}

func (sm *StatisticalModel) lastAnomaly() time.Time {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.LastAnomaly
}

func (sm *StatisticalModel) markAnomaly() {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.LastAnomaly = time.Now()
	sm.AnomalyCount++
}

func (sm *StatisticalModel) anomalyCount() int64 {
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return sm.AnomalyCount
}
