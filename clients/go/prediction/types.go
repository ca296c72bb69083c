// Package prediction is a drop-in replacement for DWCP's bandwidth prediction package
// (backend/core/network/dwcp/prediction): the same exported types, constructors and method sets, answered by
// the inference service's bandwidth_predictor. A DWCP service changes its import path and nothing else.
//
// Where the service is: an Option (WithTarget, WithTLS, WithClient...), else a modelPath that is a gRPC target
// ("host:port", "dns:///name:port"), else $DWCP_INFERENCE_TARGET, else 127.0.0.1:50051.
package prediction

import (
	"time"

	"github.com/dwcp/inference/clients/go/inference"
)

// NetworkSample is one measurement of a link (DWCP's type, verbatim).
type NetworkSample struct {
	Timestamp     time.Time `json:"timestamp"`
	BandwidthMbps float64   `json:"bandwidth_mbps"`
	LatencyMs     float64   `json:"latency_ms"`
	PacketLoss    float64   `json:"packet_loss"`
	JitterMs      float64   `json:"jitter_ms"`
	TimeOfDay     int       `json:"time_of_day"`
	DayOfWeek     int       `json:"day_of_week"`
	NodeID        string    `json:"node_id"`
	PeerID        string    `json:"peer_id"`
}

// BandwidthPrediction is the predicted next sample of a link (DWCP's type, verbatim).
type BandwidthPrediction struct {
	PredictedBandwidthMbps float64   `json:"predicted_bandwidth_mbps"`
	PredictedLatencyMs     float64   `json:"predicted_latency_ms"`
	PredictedPacketLoss    float64   `json:"predicted_packet_loss"`
	PredictedJitterMs      float64   `json:"predicted_jitter_ms"`
	Confidence             float64   `json:"confidence"`
	ValidUntil             time.Time `json:"valid_until"`
	ModelVersion           string    `json:"model_version"`
	PredictionTime         time.Time `json:"prediction_time"`
	// Source says what answered: the model in-process, the service, or DWCP's rule (an addition to DWCP's
	// type: code that builds the type with field names, as DWCP's does, compiles unchanged).
	Source inference.Source `json:"source,omitempty"`
	// LowerMbps and UpperMbps are the interval [p10, p90] of a version with quantile outputs (additions to
	// DWCP's type): the next bandwidth falls below LowerMbps about 10% of the time, and inside the interval
	// about Confidence of the time (that version's held-out share). Nil when the answer has no interval (a
	// version without quantiles, DWCP's rule).
	LowerMbps *float64 `json:"lower_mbps,omitempty"`
	UpperMbps *float64 `json:"upper_mbps,omitempty"`
}

// PredictorMetrics summarises a predictor's use and accuracy (DWCP's type, verbatim).
type PredictorMetrics struct {
	ModelVersion       string
	LoadTime           time.Time
	InferenceCount     uint64
	AvgInferenceMs     float64
	AvgPredictionError float64
	MaxPredictionError float64
	Accuracy           float64
}

// PredictionRecord is one prediction and, once UpdateActual has judged it, the sample then observed (DWCP's
// type, verbatim). Error is |predicted - actual| / actual bandwidth, or NaN until the actual is known.
type PredictionRecord struct {
	Timestamp       time.Time
	Predicted       BandwidthPrediction
	Actual          *NetworkSample
	Error           float64
	InferenceTimeMs float64
}

// PredictionHistoryEntry is a prediction the service made and, once known, its actual sample (DWCP's type).
type PredictionHistoryEntry struct {
	Prediction BandwidthPrediction
	Actual     *NetworkSample
	Error      float64
	Timestamp  time.Time
}

// ABTestResults compares the primary model with the alternate one (DWCP's type, verbatim).
type ABTestResults struct {
	PrimaryAccuracy   float64
	AlternateAccuracy float64
	PrimaryLatency    time.Duration
	AlternateLatency  time.Duration
	TestStartTime     time.Time
	TestDuration      time.Duration
	PredictionCount   int
	WinningModel      string
}

// DataStatistics summarises the samples a DataCollector holds (DWCP's type, verbatim).
type DataStatistics struct {
	SampleCount   int
	TimeRange     TimeRange
	AvgBandwidth  float64
	MinBandwidth  float64
	MaxBandwidth  float64
	AvgLatency    float64
	AvgPacketLoss float64
	AvgJitter     float64
}

// TimeRange is a period (DWCP's type, verbatim).
type TimeRange struct {
	Start time.Time
	End   time.Time
}
