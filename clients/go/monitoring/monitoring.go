// Package monitoring is a drop-in replacement for DWCP's anomaly detection types, with a Detector answered by
// the inference service's reliability model. Only the import path changes.
package monitoring

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// SeverityLevel grades an anomaly.
type SeverityLevel int

const (
	SeverityInfo SeverityLevel = iota
	SeverityWarning
	SeverityCritical
)

func (s SeverityLevel) String() string {
	switch s {
	case SeverityWarning:
		return "warning"
	case SeverityCritical:
		return "critical"
	}
	return "info"
}

// MetricVector is one observation of a node (DWCP's type, verbatim).
type MetricVector struct {
	Timestamp                                                                time.Time
	Bandwidth, Latency, PacketLoss, Jitter, CPUUsage, MemoryUsage, ErrorRate float64
}

// ToSlice returns the values in field order: Bandwidth, Latency, PacketLoss, Jitter, CPUUsage, MemoryUsage,
// ErrorRate.
func (m *MetricVector) ToSlice() []float64 {
	return []float64{m.Bandwidth, m.Latency, m.PacketLoss, m.Jitter, m.CPUUsage, m.MemoryUsage, m.ErrorRate}
}

// Anomaly is a detected anomaly (DWCP's type, verbatim).
type Anomaly struct {
	Timestamp                  time.Time
	MetricName                 string
	Value, Expected, Deviation float64
	Severity                   SeverityLevel
	Confidence                 float64
	ModelType                  string
	Description                string
	Context                    map[string]interface{}
}

// Detector is DWCP's detector interface, verbatim.
type Detector interface {
	Detect(ctx context.Context, metrics *MetricVector) (*Anomaly, error)
	Train(ctx context.Context, normalData []*MetricVector) error
	Name() string
}

// InferenceDetector is a Detector answered by the service's reliability_detector.
//
// A MetricVector carries fewer fields than the model reads: Latency is sent as the median latency, the
// p99 as Latency x P99Ratio, and the fields it lacks (timeouts, SLA violations, connection failures, disk I/O)
// take the values of Baseline. Callers with the full node metrics use DetectNode.
type InferenceDetector struct {
	client   *inference.Client
	P99Ratio float64
	Baseline *pb.NodeMetrics
	// Fallback, when set, answers when the service cannot; its anomalies' ModelType starts with "fallback:".
	Fallback  Detector
	fallbacks atomic.Uint64
}

var _ Detector = (*InferenceDetector)(nil)

// NewInferenceDetector returns a detector using client, with a typical p99/p50 ratio of 2.7 and a quiet
// baseline for the fields a MetricVector lacks.
func NewInferenceDetector(client *inference.Client) *InferenceDetector {
	return &InferenceDetector{client: client, P99Ratio: 2.7, Baseline: &pb.NodeMetrics{TimeoutRate: 0.002,
		SlaViolations: 0, ConnectionFailures: 0, DiskIoMbps: 20}}
}

// Name identifies the detector.
func (d *InferenceDetector) Name() string { return "inference:reliability_detector" }

// Train fits the fallback, if any. The service's model is trained offline (dwcp-inference train reliability
// --data nodes.csv) and served as a new version, so there is nothing else to fit in-process.
func (d *InferenceDetector) Train(ctx context.Context, normalData []*MetricVector) error {
	if len(normalData) == 0 {
		return fmt.Errorf("monitoring: no normal data")
	}
	if d.Fallback != nil {
		return d.Fallback.Train(ctx, normalData)
	}
	return ctx.Err()
}

// Fallbacks counts the calls the fallback answered.
func (d *InferenceDetector) Fallbacks() uint64 { return d.fallbacks.Load() }

// Detect returns an Anomaly when the node's metrics are anomalous, nil when they are not.
func (d *InferenceDetector) Detect(ctx context.Context, m *MetricVector) (*Anomaly, error) {
	n := &pb.NodeMetrics{ErrorRate: m.ErrorRate, TimeoutRate: d.Baseline.GetTimeoutRate(), LatencyP50Ms: m.Latency,
		LatencyP99Ms: m.Latency * d.P99Ratio, SlaViolations: d.Baseline.GetSlaViolations(),
		ConnectionFailures: d.Baseline.GetConnectionFailures(), PacketLossRate: m.PacketLoss, CpuUsage: m.CPUUsage,
		MemoryUsage: m.MemoryUsage, DiskIoMbps: d.Baseline.GetDiskIoMbps()}
	a, err := d.DetectNode(ctx, n)
	if err != nil && d.Fallback != nil {
		d.fallbacks.Add(1)
		if a, err = d.Fallback.Detect(ctx, m); a != nil {
			a.ModelType = "fallback:" + d.Fallback.Name()
		}
	}
	if a != nil {
		a.Timestamp = m.Timestamp
	}
	return a, err
}

// DetectNode judges a full node metric vector.
func (d *InferenceDetector) DetectNode(ctx context.Context, n *pb.NodeMetrics) (*Anomaly, error) {
	resp, err := d.client.DetectAnomaly(ctx, &pb.DetectAnomalyRequest{Metrics: n})
	if err != nil {
		return nil, err
	}
	v := resp.GetVerdict()
	if !v.GetIsAnomaly() {
		return nil, nil
	}
	a := &Anomaly{Timestamp: time.Now(), Severity: Severity(v.GetSeverity()), Confidence: confidence(v),
		ModelType: resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion(),
		Context: map[string]interface{}{"score": v.GetScore(), "threshold": v.GetThreshold(),
			"prediction_id": v.GetPredictionId()}}
	if top := v.GetContributions(); len(top) > 0 {
		a.MetricName, a.Value, a.Expected, a.Deviation = top[0].GetFeature(), top[0].GetValue(), top[0].GetExpected(),
			top[0].GetDeviation()
	}
	a.Description = fmt.Sprintf("%s anomaly: %s = %.4g, normal %.4g (%.1f sd); score %.3g >= threshold %.3g",
		a.Severity, a.MetricName, a.Value, a.Expected, a.Deviation, v.GetScore(), v.GetThreshold())
	return a, nil
}

// Severity maps the service's severity to DWCP's.
func Severity(s pb.Severity) SeverityLevel {
	switch s {
	case pb.Severity_SEVERITY_CRITICAL:
		return SeverityCritical
	case pb.Severity_SEVERITY_WARNING:
		return SeverityWarning
	}
	return SeverityInfo
}

// confidence grows from 0.5 at the threshold towards 1 as the score passes it.
func confidence(v *pb.AnomalyVerdict) float64 {
	t, s := v.GetThreshold(), v.GetScore()
	if s <= t {
		return 0.5
	}
	return 1 - 0.5*t/s
}

// ThresholdDetector is a static-threshold Detector, the kind DWCP used before models: errors above 5%, loss
// above 2%, CPU or memory above 95%, or latency above 3x its normal mean (learned by Train).
type ThresholdDetector struct {
	normalLatency float64
}

var _ Detector = (*ThresholdDetector)(nil)

// Name identifies the detector.
func (t *ThresholdDetector) Name() string { return "static_threshold" }

// Train learns the normal mean latency.
func (t *ThresholdDetector) Train(ctx context.Context, normalData []*MetricVector) error {
	if len(normalData) == 0 {
		return fmt.Errorf("monitoring: no normal data")
	}
	sum := 0.0
	for _, m := range normalData {
		sum += m.Latency
	}
	t.normalLatency = sum / float64(len(normalData))
	return ctx.Err()
}

// Detect flags the first metric over its threshold.
func (t *ThresholdDetector) Detect(_ context.Context, m *MetricVector) (*Anomaly, error) {
	checks := []struct {
		name             string
		value, threshold float64
	}{{"error_rate", m.ErrorRate, 0.05}, {"packet_loss", m.PacketLoss, 0.02}, {"cpu_usage", m.CPUUsage, 0.95},
		{"memory_usage", m.MemoryUsage, 0.95}, {"latency", m.Latency, 3 * t.normalLatency}}
	for _, c := range checks {
		if c.threshold > 0 && c.value > c.threshold {
			return &Anomaly{Timestamp: m.Timestamp, MetricName: c.name, Value: c.value, Expected: c.threshold,
				Deviation: c.value / c.threshold, Severity: SeverityWarning, Confidence: 0.5,
				ModelType: t.Name(), Description: fmt.Sprintf("%s %.4g over its threshold %.4g", c.name,
					c.value, c.threshold), Context: map[string]interface{}{}}, nil
		}
	}
	return nil, nil
}
