package monitoring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/inference"
)

// TargetEnv names the environment variable that gives the service's address when no option does.
const TargetEnv = "DWCP_INFERENCE_TARGET"

// ErrNoSuchModel is returned by LSTMAutoencoderModel: the service has no model over windows of MetricVectors
// (its consensus_latency autoencoder reads consensus samples; see the consensus package).
var ErrNoSuchModel = errors.New("monitoring: the inference service has no LSTM autoencoder over MetricVector " +
	"windows (consensus_latency reads consensus samples: use the consensus package)")

// Option says where the service is. DWCP's constructors take none; these are extra, trailing arguments.
type Option func(*options)

type options struct {
	client     inference.Client
	clientOpts []inference.Option
	order      []inference.Source
	metrics    *inference.ChainMetrics
	local      inference.LocalConfig
	cacheDir   string
}

// WithClient makes the detector use c (the caller keeps owning it).
func WithClient(c inference.Client) Option { return func(o *options) { o.client = c } }

// WithClientOptions passes options (target, TLS, timeouts...) to the client the detector makes.
func WithClientOptions(opts ...inference.Option) Option {
	return func(o *options) { o.clientOpts = append(o.clientOpts, opts...) }
}

// WithSourceOrder sets the sources asked and their order (default embedded, remote, rule).
func WithSourceOrder(order ...inference.Source) Option {
	return func(o *options) { o.order = append([]inference.Source(nil), order...) }
}

// WithChainMetrics counts answers and fallbacks into m (shared between drop-ins, registered once).
func WithChainMetrics(m *inference.ChainMetrics) Option { return func(o *options) { o.metrics = m } }

// WithLocalCache runs the service's reliability_detector versions in-process: synced from the service
// (WithClient's, inference.WithTarget among the options, a target modelPath, $DWCP_INFERENCE_TARGET or
// 127.0.0.1:50051) into dir, they answer first, the service second, DWCP's rule last, following the service's
// promotes. The local runtime must be registered (import the embedded package). The constructor waits a few
// seconds at most for the first sync; the cache answers while the service is down, also after a restart. It
// replaces a modelPath on disk.
func WithLocalCache(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithLocalConfig passes settings (the libonnxruntime path) to the local runtime.
func WithLocalConfig(cfg inference.LocalConfig) Option { return func(o *options) { o.local = cfg } }

func isTarget(modelPath string) bool {
	return strings.Contains(modelPath, ":") && !strings.HasSuffix(modelPath, ".onnx")
}

// detectorFor opens the sources modelPath and the options name, as prediction.NewLSTMPredictor does: a
// modelPath on disk runs in-process through the registered local runtime (an error saying so when there is
// none); the service is WithClient's, else inference.WithTarget among the options, modelPath when it is a gRPC
// target, or $DWCP_INFERENCE_TARGET; with none of these and no model on disk, 127.0.0.1:50051. A modelPath
// that does not exist (DWCP's "isolation_forest.onnx" default) names nothing.
func detectorFor(modelPath string, opts []Option) (*InferenceDetector, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var local inference.LocalRuntime
	if modelPath != "" && !isTarget(modelPath) && o.cacheDir == "" {
		if _, err := os.Stat(modelPath); err == nil {
			if local, err = inference.OpenLocal(modelPath, o.local); err != nil {
				return nil, fmt.Errorf("monitoring: %w", err)
			}
		}
	}
	client := o.client
	if client == nil {
		target := os.Getenv(TargetEnv)
		if isTarget(modelPath) {
			target = modelPath
		}
		if target == "" && local == nil {
			target = "127.0.0.1:50051"
		}
		if target != "" || len(o.clientOpts) > 0 {
			if target == "" {
				target = "127.0.0.1:50051"
			}
			c, err := inference.New(append([]inference.Option{inference.WithTarget(target)}, o.clientOpts...)...)
			if err != nil {
				if local != nil {
					local.Close()
				}
				return nil, err
			}
			client = c
		}
	}
	if o.cacheDir != "" && client != nil {
		cfg := o.local.SyncedFrom(client.Target(), o.clientOpts, o.cacheDir, "reliability_detector")
		var err error
		if local, err = inference.OpenLocal(o.cacheDir, cfg); err != nil {
			if client != o.client {
				client.Close()
			}
			return nil, fmt.Errorf("monitoring: %w", err)
		}
	}
	d, err := newInferenceDetector(client, o.clientOpts, local, o.order, o.metrics)
	if err != nil {
		return nil, fmt.Errorf("monitoring: %w", err)
	}
	d.ownedClient = client != nil && client != o.client
	return d, nil
}

// IsolationForestModel is DWCP's node-reliability detector, answered by the reliability_detector model
// (whichever model family its current version is): see InferenceDetector and detectorFor for its sources.
type IsolationForestModel struct {
	*InferenceDetector
}

// IsolationTree is DWCP's exported tree type, kept so that code naming it compiles; the trees live in the
// service's model.
type IsolationTree struct{ _ struct{} }

// IsolationNode is DWCP's exported node type, kept so that code naming it compiles.
type IsolationNode struct{ _ struct{} }

// NewIsolationForestModel returns the reliability detector for modelPath (see detectorFor).
func NewIsolationForestModel(modelPath string, logger *zap.Logger, opts ...Option) (*IsolationForestModel, error) {
	d, err := detectorFor(modelPath, opts)
	if err != nil {
		return nil, err
	}
	return &IsolationForestModel{d}, nil
}

// LSTMAutoencoderModel is DWCP's MetricVector-window autoencoder. The service has no such model: the
// constructor returns it with ErrNoSuchModel, and Detect and Train return ErrNoSuchModel.
type LSTMAutoencoderModel struct{ _ struct{} }

// NewLSTMAutoencoderModel returns ErrNoSuchModel (DWCP's NewAnomalyDetector logs it and goes on without it).
func NewLSTMAutoencoderModel(modelPath string, logger *zap.Logger) (*LSTMAutoencoderModel, error) {
	return &LSTMAutoencoderModel{}, ErrNoSuchModel
}

// Detect returns ErrNoSuchModel.
func (*LSTMAutoencoderModel) Detect(context.Context, *MetricVector) (*Anomaly, error) {
	return nil, ErrNoSuchModel
}

// Train returns ErrNoSuchModel.
func (*LSTMAutoencoderModel) Train(context.Context, []*MetricVector) error { return ErrNoSuchModel }

// Name identifies the detector.
func (*LSTMAutoencoderModel) Name() string { return "lstm_autoencoder (not served)" }

// DetectorConfig configures an AnomalyDetector (DWCP's type, verbatim). Here EnableIsolationForest selects the
// service's reliability_detector and IsolationForestPath may name its target; the other detectors are not
// models of the service and are not provided (NewAnomalyDetector logs which were asked for).
type DetectorConfig struct {
	EnableIsolationForest bool
	EnableLSTM            bool
	EnableZScore          bool
	EnableSeasonalESD     bool

	EnsembleThreshold float64

	IsolationForestPath string
	LSTMModelPath       string

	ZScoreWindow    int
	ZScoreThreshold float64

	SeasonalPeriod       int
	SeasonalMaxAnomalies int

	AlertOnWarning  bool
	AlertOnCritical bool
}

// DefaultDetectorConfig enables the service's reliability detector only.
func DefaultDetectorConfig() *DetectorConfig {
	return &DetectorConfig{EnableIsolationForest: true, EnsembleThreshold: 0.6, ZScoreWindow: 100,
		ZScoreThreshold: 3, SeasonalPeriod: 24, SeasonalMaxAnomalies: 10, AlertOnWarning: true, AlertOnCritical: true}
}

// AnomalyDetector runs the configured detectors on node metrics (DWCP's type and method set).
type AnomalyDetector struct {
	config    *DetectorConfig
	logger    *zap.Logger
	detectors []Detector

	mu      sync.RWMutex
	enabled bool
}

// NewAnomalyDetector builds the detector: the service's reliability_detector when EnableIsolationForest.
// Where the service is: opts, else IsolationForestPath when it is a gRPC target, else $DWCP_INFERENCE_TARGET.
func NewAnomalyDetector(config *DetectorConfig, logger *zap.Logger, opts ...Option) (*AnomalyDetector, error) {
	if config == nil {
		config = DefaultDetectorConfig()
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	ad := &AnomalyDetector{config: config, logger: logger, enabled: true}
	if config.EnableIsolationForest {
		m, err := NewIsolationForestModel(config.IsolationForestPath, logger, opts...)
		if err != nil {
			return nil, fmt.Errorf("monitoring: reliability detector: %w", err)
		}
		ad.detectors = append(ad.detectors, m)
	}
	for name, asked := range map[string]bool{"lstm_autoencoder": config.EnableLSTM, "zscore": config.EnableZScore,
		"seasonal_esd": config.EnableSeasonalESD} {
		if asked {
			logger.Warn("detector not provided by the inference drop-in; running without it", zap.String("detector", name))
		}
	}
	return ad, nil
}

// Detect runs every detector and returns the anomalies they found (nil when disabled). A detector's error is
// logged and the others' answers returned; when every detector failed, the first error is returned.
func (ad *AnomalyDetector) Detect(ctx context.Context, metrics *MetricVector) ([]*Anomaly, error) {
	ad.mu.RLock()
	enabled := ad.enabled
	ad.mu.RUnlock()
	if !enabled {
		return nil, nil
	}
	var found []*Anomaly
	var firstErr error
	failed := 0
	for _, d := range ad.detectors {
		a, err := d.Detect(ctx, metrics)
		if err != nil {
			failed++
			firstErr = cmpOr(firstErr, err)
			ad.logger.Error("detector error", zap.String("detector", d.Name()), zap.Error(err))
			continue
		}
		if a != nil {
			found = append(found, a)
		}
	}
	if failed > 0 && failed == len(ad.detectors) {
		return nil, firstErr
	}
	return found, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// Train returns ErrTrainedOffline: the service's models are trained offline.
func (ad *AnomalyDetector) Train(ctx context.Context, normalData []*MetricVector) error {
	return ErrTrainedOffline
}

// DetectAnomaly judges one metric's value by our range rule, not a model (no model reads a lone value):
// a negative value of any metric, or a fraction metric (packet_loss, error_rate, cpu_usage, memory_usage)
// above 1, is a critical anomaly with confidence 1; anything else is not an anomaly.
func (ad *AnomalyDetector) DetectAnomaly(metricName string, value float64) *AnomalyResult {
	r := &AnomalyResult{MetricName: metricName, Value: value, Timestamp: time.Now(),
		Description: fmt.Sprintf("%s = %.4g within its range", metricName, value)}
	ad.mu.RLock()
	enabled := ad.enabled
	ad.mu.RUnlock()
	if !enabled {
		r.Description = "detection disabled"
		return r
	}
	limit := map[string]float64{"packet_loss": 1, "error_rate": 1, "cpu_usage": 1, "memory_usage": 1}
	if hi, bounded := limit[metricName]; value < 0 || (bounded && value > hi) {
		r.IsAnomaly, r.Severity, r.Confidence = true, SeverityCritical, 1
		r.Description = fmt.Sprintf("%s = %.4g is outside its possible range", metricName, value)
	}
	return r
}

// Close releases what the constructor opened: the reliability detector's client, in-process runtime and its
// sync (InferenceDetector.Close). An addition to DWCP's API; a detector used for the life of the process need
// not be closed.
func (ad *AnomalyDetector) Close() error {
	var errs []error
	for _, d := range ad.detectors {
		if c, ok := d.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Enable turns detection on.
func (ad *AnomalyDetector) Enable() {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.enabled = true
}

// Disable turns detection off: Detect returns nothing.
func (ad *AnomalyDetector) Disable() {
	ad.mu.Lock()
	defer ad.mu.Unlock()
	ad.enabled = false
}
