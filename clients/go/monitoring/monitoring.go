// Package monitoring is a drop-in replacement for the anomaly detection of DWCP's monitoring package
// (backend/core/network/dwcp/monitoring: anomaly_detector.go, isolation_forest.go, lstm_autoencoder.go), with
// the same exported names, answered by the inference service's reliability_detector. Only the import path
// changes. The rest of DWCP's monitoring package (MonitoringAPI, tracing, alerting, dashboards, SLA) is not a
// model and is not replaced here.
package monitoring

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/imputation"
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
	case SeverityInfo:
		return "info"
	case SeverityWarning:
		return "warning"
	case SeverityCritical:
		return "critical"
	}
	return "unknown"
}

// MetricVector is one observation of a node (DWCP's type, verbatim). The service reads PacketLoss, CPUUsage,
// MemoryUsage and ErrorRate as fractions 0..1 and Latency in ms.
type MetricVector struct {
	Timestamp   time.Time
	Bandwidth   float64
	Latency     float64
	PacketLoss  float64
	Jitter      float64
	CPUUsage    float64
	MemoryUsage float64
	ErrorRate   float64
}

// ToSlice returns the values in field order: Bandwidth, Latency, PacketLoss, Jitter, CPUUsage, MemoryUsage,
// ErrorRate.
func (m *MetricVector) ToSlice() []float64 {
	return []float64{m.Bandwidth, m.Latency, m.PacketLoss, m.Jitter, m.CPUUsage, m.MemoryUsage, m.ErrorRate}
}

// Anomaly is a detected anomaly (DWCP's type, verbatim).
type Anomaly struct {
	Timestamp   time.Time
	MetricName  string
	Value       float64
	Expected    float64
	Deviation   float64
	Severity    SeverityLevel
	Confidence  float64
	ModelType   string
	Description string
	Context     map[string]interface{}
}

// AnomalyResult is the verdict on one metric's value (DWCP's type, verbatim).
type AnomalyResult struct {
	MetricName  string
	IsAnomaly   bool
	Severity    SeverityLevel
	Confidence  float64
	Value       float64
	Expected    float64
	Deviation   float64
	Timestamp   time.Time
	Description string
}

// Detector is DWCP's detector interface, verbatim.
type Detector interface {
	Detect(ctx context.Context, metrics *MetricVector) (*Anomaly, error)
	Train(ctx context.Context, normalData []*MetricVector) error
	Name() string
}

// ErrTrainedOffline is returned by Train: the service's models are trained offline
// (`dwcp-inference train reliability --data nodes.csv`) and published as new versions, so there is nothing to
// fit in-process.
var ErrTrainedOffline = errors.New("monitoring: the reliability model is trained offline (dwcp-inference train " +
	"reliability --data nodes.csv) and served as a new version; Train fits nothing in-process")

// unmeasured are the NodeMetrics fields the model reads that a MetricVector does not carry.
var unmeasured = []string{"timeout_rate", "latency_p99_ms", "sla_violations", "connection_failures", "disk_io_mbps"}

// ImputedField says what Detect sent for a field the MetricVector lacks: Value, and How it was derived (the
// version's metadata, e.g. "median of the training data's normal rows", or NoMetadata when it was sent as 0).
type ImputedField = imputation.Imputed

// NoMetadata is the How of a field sent as 0 because no version metadata said what to send.
const NoMetadata = imputation.NoMetadata

// setNodeField sets one of the unmeasured fields.
func setNodeField(n *pb.NodeMetrics, field string, v float64) {
	switch field {
	case "timeout_rate":
		n.TimeoutRate = v
	case "latency_p99_ms":
		n.LatencyP99Ms = v
	case "sla_violations":
		n.SlaViolations = v
	case "connection_failures":
		n.ConnectionFailures = v
	case "disk_io_mbps":
		n.DiskIoMbps = v
	}
}

// InferenceDetector is a Detector answered by the reliability_detector model, through an inference.Chain:
// in-process when NewIsolationForestModel's modelPath names a model on disk and a local runtime is registered,
// then the service, then DWCP's rule (Fallback, default a ThresholdDetector).
//
// Detect sends what a MetricVector carries: ErrorRate, Latency (as the median latency), PacketLoss, CPUUsage
// and MemoryUsage, as fractions 0..1 where the service's NodeMetrics says so. The model also reads
// timeout_rate, latency_p99_ms, sla_violations, connection_failures and disk_io_mbps, which a MetricVector
// lacks: for those it sends what the serving version's metadata says to (its `imputation` section, e.g. the
// median of the training data's normal rows), read from the in-process runtime's version or, for the service,
// from the version's metadata.json fetched once per version (modelsync.FetchMetadata); with neither (a version
// exported before the section, no ModelDistribution service) it sends 0 and says "not imputed: no metadata".
// Every model's Anomaly says so: Context["unmeasured_fields"] (the names) and Context["imputed"]
// ([]ImputedField: field, value, how, version). Callers with the full node metrics use DetectNode.
// Context["source"] says what judged.
type InferenceDetector struct {
	client      inference.Client
	ownedClient bool // made by the constructor (closed by Close), not the caller's
	chain       *inference.Chain
	local       inference.LocalRuntime
	imputer     *imputation.Imputer
	// Fallback, when set, is the rule that answers when no model can (default a ThresholdDetector); its
	// anomalies' ModelType starts with "fallback:".
	Fallback  Detector
	fallbacks atomic.Uint64
}

var _ Detector = (*InferenceDetector)(nil)

// NewInferenceDetector returns a detector asking client, then DWCP's rule.
func NewInferenceDetector(client inference.Client) *InferenceDetector {
	d, _ := newInferenceDetector(client, nil, nil, nil, nil)
	return d
}

func newInferenceDetector(client inference.Client, clientOpts []inference.Option, local inference.LocalRuntime,
	order []inference.Source, metrics *inference.ChainMetrics) (*InferenceDetector, error) {
	d := &InferenceDetector{client: client, local: local, imputer: newImputer(client, local, clientOpts)}
	providers := []inference.Provider{{Source: inference.SourceRule, Answerer: anomalyRule{d: d}}}
	if client != nil {
		providers = append(providers, inference.Provider{Source: inference.SourceRemote, Answerer: inference.Remote(client)})
	}
	if local != nil {
		providers = append(providers, inference.Provider{Source: inference.SourceEmbedded, Answerer: local})
	}
	if metrics == nil {
		metrics = inference.NewChainMetrics()
	}
	opts := []inference.ChainOption{inference.WithChainMetrics(metrics)}
	if order != nil {
		opts = append(opts, inference.WithOrder(order...))
	}
	var err error
	d.chain, err = inference.NewChain(providers, opts...)
	return d, err
}

// Name identifies the detector.
func (d *InferenceDetector) Name() string { return "inference:reliability_detector" }

// Close releases what the constructor opened: the in-process runtime (and its sync, WithLocalCache) and the
// client it made; a client given by the caller stays open. An addition to DWCP's API (its detectors hold
// nothing to release); a detector used for the life of the process need not be closed.
func (d *InferenceDetector) Close() error {
	errs := []error{d.imputer.Close()}
	if d.local != nil {
		errs = append(errs, d.local.Close())
	}
	if d.ownedClient && d.client != nil {
		errs = append(errs, d.client.Close())
	}
	return errors.Join(errs...)
}

// Train fits the fallback, if any, and returns ErrTrainedOffline (with the fallback's error, if it failed):
// the service's model is not trained here.
func (d *InferenceDetector) Train(ctx context.Context, normalData []*MetricVector) error {
	if d.Fallback != nil {
		if err := d.Fallback.Train(ctx, normalData); err != nil {
			return errors.Join(ErrTrainedOffline, err)
		}
	}
	return ErrTrainedOffline
}

// Fallbacks counts the calls the rule answered.
func (d *InferenceDetector) Fallbacks() uint64 { return d.fallbacks.Load() }

// Metrics is the detector's answer and fallback counters, a prometheus.Collector to register.
func (d *InferenceDetector) Metrics() *inference.ChainMetrics { return d.chain.Metrics() }

// Sources lists the sources asked, in order.
func (d *InferenceDetector) Sources() []inference.Source { return d.chain.Sources() }

type metricVectorKey struct{}

// Detect returns an Anomaly when the node's metrics are anomalous, nil when they are not.
func (d *InferenceDetector) Detect(ctx context.Context, m *MetricVector) (*Anomaly, error) {
	n := &pb.NodeMetrics{ErrorRate: m.ErrorRate, LatencyP50Ms: m.Latency, PacketLossRate: m.PacketLoss,
		CpuUsage: m.CPUUsage, MemoryUsage: m.MemoryUsage}
	if !m.Timestamp.IsZero() {
		n.Timestamp = timestamppb.New(m.Timestamp)
	}
	imputed := d.imputer.Fill(ctx, unmeasured, func(field string, v float64) { setNodeField(n, field, v) })
	a, err := d.DetectNode(context.WithValue(ctx, metricVectorKey{}, m), n)
	if a != nil {
		if !m.Timestamp.IsZero() {
			a.Timestamp = m.Timestamp
		}
		if a.Context["source"] != inference.SourceRule {
			a.Context["unmeasured_fields"] = append([]string(nil), unmeasured...)
			a.Context["imputed"] = imputed
		}
	}
	return a, err
}

// DetectNode judges a full node metric vector. Context["contributions"] holds the verdict's per-field
// contributions (value, normal value, deviation in standard deviations), largest first.
func (d *InferenceDetector) DetectNode(ctx context.Context, n *pb.NodeMetrics) (*Anomaly, error) {
	resp, source, err := d.chain.DetectAnomaly(ctx, &pb.DetectAnomalyRequest{Metrics: n})
	if err != nil {
		return nil, err
	}
	if source == inference.SourceRule {
		d.fallbacks.Add(1)
	} else {
		d.imputer.Observe(resp.GetModel().GetVersion()) // the next call imputes from the version that answers
	}
	v := resp.GetVerdict()
	if !v.GetIsAnomaly() {
		return nil, nil
	}
	a := &Anomaly{Timestamp: time.Now(), Severity: Severity(v.GetSeverity()), Confidence: confidence(v),
		ModelType: resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion(),
		Context: map[string]interface{}{"score": v.GetScore(), "threshold": v.GetThreshold(),
			"prediction_id": v.GetPredictionId(), "source": source,
			"contributions": v.GetContributions()}}
	if top := v.GetContributions(); len(top) > 0 {
		a.MetricName, a.Value, a.Expected, a.Deviation = top[0].GetFeature(), top[0].GetValue(), top[0].GetExpected(),
			top[0].GetDeviation()
	}
	a.Description = fmt.Sprintf("%s anomaly: %s = %.4g, normal %.4g (%.1f sd); score %.3g >= threshold %.3g",
		a.Severity, a.MetricName, a.Value, a.Expected, a.Deviation, v.GetScore(), v.GetThreshold())
	return a, nil
}

// newImputer finds imputation values in local's versions, else in the service's metadata (over a connection
// dialled to the client's target with clientOpts, when first needed).
func newImputer(client inference.Client, local inference.LocalRuntime, clientOpts []inference.Option) *imputation.Imputer {
	var dial func() (grpc.ClientConnInterface, func() error, error)
	if client != nil && client.Target() != "" {
		dial = func() (grpc.ClientConnInterface, func() error, error) {
			conn, err := inference.Dial(append([]inference.Option{inference.WithTarget(client.Target())}, clientOpts...)...)
			if err != nil {
				return nil, nil, err
			}
			return conn, conn.Close, nil
		}
	}
	return imputation.New("reliability_detector", local, dial)
}

// anomalyRule is the detector's Fallback (or a ThresholdDetector) as the chain's last source.
type anomalyRule struct {
	inference.UnimplementedAnswerer
	d *InferenceDetector
}

func (r anomalyRule) DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	det := r.d.Fallback
	if det == nil {
		det = &ThresholdDetector{}
	}
	m, ok := ctx.Value(metricVectorKey{}).(*MetricVector)
	if !ok {
		n := req.GetMetrics()
		m = &MetricVector{Latency: n.GetLatencyP50Ms(), PacketLoss: n.GetPacketLossRate(), CPUUsage: n.GetCpuUsage(),
			MemoryUsage: n.GetMemoryUsage(), ErrorRate: n.GetErrorRate()}
	}
	a, err := det.Detect(ctx, m)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	v := &pb.AnomalyVerdict{Threshold: 1}
	if a != nil {
		v.IsAnomaly, v.Score = true, math.Max(1, a.Deviation)
		v.Severity = map[SeverityLevel]pb.Severity{SeverityInfo: pb.Severity_SEVERITY_INFO,
			SeverityWarning: pb.Severity_SEVERITY_WARNING, SeverityCritical: pb.Severity_SEVERITY_CRITICAL}[a.Severity]
		v.Contributions = []*pb.FeatureContribution{{Feature: a.MetricName, Value: a.Value, Expected: a.Expected,
			Deviation: a.Deviation}}
	}
	return &pb.DetectAnomalyResponse{Verdict: v, Model: &pb.ModelRef{Name: "fallback", Version: det.Name()}}, nil
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
// above 2%, CPU or memory above 95%, or latency above 3x its normal mean (learned by Train; before it, DWCP's
// DetectAnomaly latency limit, 500 ms).
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

// dwcpLatencyLimitMs is DWCP's DetectAnomaly latency limit (monitoring/anomaly_detector.go).
const dwcpLatencyLimitMs = 500

func (t *ThresholdDetector) latencyLimit() float64 {
	if t.normalLatency > 0 {
		return 3 * t.normalLatency
	}
	return dwcpLatencyLimitMs
}

// Detect flags the first metric over its threshold.
func (t *ThresholdDetector) Detect(_ context.Context, m *MetricVector) (*Anomaly, error) {
	checks := []struct {
		name             string
		value, threshold float64
	}{{"error_rate", m.ErrorRate, 0.05}, {"packet_loss", m.PacketLoss, 0.02}, {"cpu_usage", m.CPUUsage, 0.95},
		{"memory_usage", m.MemoryUsage, 0.95}, {"latency", m.Latency, t.latencyLimit()}}
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
