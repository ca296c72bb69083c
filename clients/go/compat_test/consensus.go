package compat_test

import (
	"time"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/consensus"
)

// As DWCP v3 uses its monitoring.AnomalyDetector (backend/core/network/dwcp/v3/monitoring: anomaly_detector.go,
// metrics_test.go, README.md). The one deviation: the package is our consensus, not DWCP's v3/monitoring.
func dwcpConsensus(logger *zap.Logger) error {
	config := consensus.DefaultAnomalyDetectorConfig()
	config.BandwidthThreshold, config.LatencyThreshold, config.CompressionThreshold = 2.0, 3.0, 2.5
	config.ConsensusThreshold = 2.5
	config.ShortWindowSize, config.LongWindowSize = 10, 100
	config.EnableAlerts, config.AlertCooldownPeriod, config.MinAnomalyConfidence = true, 5*time.Minute, 0.8
	var _ consensus.AnomalyDetectorConfig = *config
	var detector *consensus.AnomalyDetector = consensus.NewAnomalyDetector(config, logger)
	defer detector.Close()
	_ = consensus.NewAnomalyDetector(nil, logger)

	var anomaly *consensus.Anomaly = detector.CheckBandwidth(5000.0)
	anomaly = detector.CheckLatency(100.0)
	anomaly = detector.CheckCompressionRatio(1.1)
	anomaly = detector.CheckConsensusLatency(1000.0)
	if anomaly != nil {
		var severity string = anomaly.Severity
		_, _, _ = severity, anomaly.Component+anomaly.Metric+anomaly.Description, anomaly.Timestamp
		_ = anomaly.Value + anomaly.Expected + anomaly.Deviation + anomaly.Confidence
		_ = anomaly.Resolved
	}
	var callback consensus.AlertCallback = func(a *consensus.Anomaly) { _ = a.Metric }
	detector.RegisterAlertCallback(callback)
	detector.RegisterAlertCallback(func(a *consensus.Anomaly) {})
	var anomalies []*consensus.Anomaly = detector.GetAnomalies(time.Now().Add(-1 * time.Hour))
	_ = anomalies
	stats := detector.GetAnomalyStats()
	if total, ok := stats["total_anomalies"].(int); ok && total > 0 {
		_ = stats["severity_distribution"]
	}
	model := consensus.StatisticalModel{Name: "consensus", Mean: 1, StdDev: 1, Min: 0, Max: 2, ShortMA: 1, LongMA: 1,
		LastAnomaly: time.Now(), AnomalyCount: 1}
	_ = model.Name
	if err := detector.ResolveAnomaly(0); err != nil {
		return err
	}
	return detector.Close()
}
