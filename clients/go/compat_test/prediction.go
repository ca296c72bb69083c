package compat_test

import (
	"context"
	"time"

	"github.com/dwcp/inference/clients/go/prediction"
)

// As DWCP's prediction package, AMST integration and examples use it.
func dwcpPrediction() error {
	var p *prediction.LSTMPredictor
	p, err := prediction.NewLSTMPredictor("/models/bandwidth_lstm.onnx")
	if err != nil {
		return err
	}
	s := prediction.NetworkSample{Timestamp: time.Now(), BandwidthMbps: 1, LatencyMs: 1, PacketLoss: 0, JitterMs: 1,
		TimeOfDay: 1, DayOfWeek: 1, NodeID: "a", PeerID: "b"}
	var pred *prediction.BandwidthPrediction
	pred, err = p.Predict([]prediction.NetworkSample{s})
	_ = []float64{pred.PredictedBandwidthMbps, pred.PredictedLatencyMs, pred.PredictedPacketLoss,
		pred.PredictedJitterMs, pred.Confidence}
	_, _, _ = pred.ValidUntil, pred.ModelVersion+"", pred.PredictionTime
	p.UpdateActual(time.Now(), s)
	var m prediction.PredictorMetrics = p.GetMetrics()
	_, _, _, _ = m.ModelVersion, m.LoadTime, m.InferenceCount, m.AvgInferenceMs+m.AvgPredictionError+m.MaxPredictionError+m.Accuracy
	err = p.ReloadModel("/models/v2.onnx")
	p.Close()
	r := prediction.PredictionRecord{Timestamp: time.Now(), Predicted: *pred, Actual: &s, Error: 0, InferenceTimeMs: 1}
	_ = r

	var svc *prediction.PredictionService
	svc, err = prediction.NewPredictionService("/models/bandwidth_lstm.onnx", 30*time.Second)
	err = svc.Start(context.Background())
	var cur *prediction.BandwidthPrediction = svc.GetPrediction()
	_ = cur
	var streams, buffer int = svc.GetOptimalStreamCount(), svc.GetOptimalBufferSize()
	_, _ = streams, buffer
	err = svc.EnableABTesting("/models/alt.onnx")
	var ab *prediction.ABTestResults = svc.GetABTestResults()
	_, _, _, _ = ab.PrimaryAccuracy+ab.AlternateAccuracy, ab.PrimaryLatency+ab.AlternateLatency+ab.TestDuration, ab.TestStartTime, ab.PredictionCount
	_ = ab.WinningModel
	err = svc.ExportMetrics("/tmp/m.json")
	var running bool = svc.IsRunning()
	_ = running
	err = svc.Stop()
	h := prediction.PredictionHistoryEntry{Prediction: *pred, Actual: &s, Error: 0, Timestamp: time.Now()}
	_ = h

	var c *prediction.DataCollector = prediction.NewDataCollector(time.Minute, 10000)
	c.Start()
	var recent []prediction.NetworkSample = c.GetRecentSamples(10)
	recent = c.GetSamplesByTimeRange(time.Now().Add(-time.Hour), time.Now())
	_ = recent
	err = c.ExportForTraining("/tmp/x.csv")
	var st prediction.DataStatistics = c.GetStatistics()
	var tr prediction.TimeRange = st.TimeRange
	_, _, _ = st.SampleCount, st.AvgBandwidth+st.MinBandwidth+st.MaxBandwidth+st.AvgLatency+st.AvgPacketLoss+st.AvgJitter, tr.Start.Before(tr.End)
	c.Stop()
	return err
}
