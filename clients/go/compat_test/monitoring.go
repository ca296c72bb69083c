package compat_test

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/monitoring"
)

// As DWCP's monitoring package and its callers use it.
func dwcpMonitoring(logger *zap.Logger) error {
	cfg := monitoring.DefaultDetectorConfig()
	cfg.EnableIsolationForest, cfg.EnableLSTM, cfg.EnableZScore, cfg.EnableSeasonalESD = true, false, false, false
	cfg.EnsembleThreshold, cfg.IsolationForestPath, cfg.LSTMModelPath = 0.6, "a.onnx", "b.onnx"
	cfg.ZScoreWindow, cfg.ZScoreThreshold, cfg.SeasonalPeriod, cfg.SeasonalMaxAnomalies = 100, 3, 24, 10
	cfg.AlertOnWarning, cfg.AlertOnCritical = true, true
	var ad *monitoring.AnomalyDetector
	ad, err := monitoring.NewAnomalyDetector(cfg, logger)
	if err != nil {
		return err
	}
	m := &monitoring.MetricVector{Timestamp: time.Now(), Bandwidth: 1, Latency: 1, PacketLoss: 0, Jitter: 1,
		CPUUsage: 0.1, MemoryUsage: 0.1, ErrorRate: 0}
	_ = m.ToSlice()
	var found []*monitoring.Anomaly
	found, err = ad.Detect(context.Background(), m)
	for _, a := range found {
		_, _, _ = a.Timestamp, a.MetricName+a.ModelType+a.Description, a.Value+a.Expected+a.Deviation+a.Confidence
		_, _ = a.Severity.String(), a.Context["x"]
	}
	err = ad.Train(context.Background(), []*monitoring.MetricVector{m})
	var r *monitoring.AnomalyResult = ad.DetectAnomaly("latency", 20)
	_, _, _, _ = r.MetricName+r.Description, r.IsAnomaly, r.Severity == monitoring.SeverityCritical, r.Confidence+r.Value+r.Expected+r.Deviation
	_ = r.Timestamp
	ad.Enable()
	ad.Disable()
	_ = []monitoring.SeverityLevel{monitoring.SeverityInfo, monitoring.SeverityWarning, monitoring.SeverityCritical}

	var d monitoring.Detector
	var ifm *monitoring.IsolationForestModel
	ifm, err = monitoring.NewIsolationForestModel("isolation_forest.onnx", logger)
	d = ifm
	var lam *monitoring.LSTMAutoencoderModel
	lam, err = monitoring.NewLSTMAutoencoderModel("lstm.onnx", logger)
	d = lam
	_, err = d.Detect(context.Background(), m)
	err = d.Train(context.Background(), nil)
	_ = d.Name()
	var _ *monitoring.IsolationTree
	var _ *monitoring.IsolationNode
	return err
}
