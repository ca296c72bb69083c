package prediction

import (
	"crypto/tls"
	"os"
	"strings"

	"github.com/dwcp/inference/clients/go/inference"
)

// TargetEnv names the environment variable that gives the service's address when no option and no modelPath
// does.
const TargetEnv = "DWCP_INFERENCE_TARGET"

// Option configures a predictor or a prediction service. DWCP's constructors take none; these are extra,
// trailing arguments, so DWCP's calls compile unchanged.
type Option func(*options)

type options struct {
	client      inference.Client // the caller's; never closed here
	target      string
	clientOpts  []inference.Option
	callOptions []inference.CallOption
	order       []inference.Source // nil: inference.DefaultOrder
	metrics     *inference.ChainMetrics
	local       inference.LocalConfig
	cacheDir    string
}

// WithClient makes the predictor use c (the caller keeps owning it: Close does not close it).
func WithClient(c inference.Client) Option { return func(o *options) { o.client = c } }

// WithTarget sets the service's address, whatever modelPath says.
func WithTarget(target string) Option { return func(o *options) { o.target = target } }

// WithTLS secures the connection to the service (server CA, client certificate for mutual TLS).
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) { o.clientOpts = append(o.clientOpts, inference.WithTLS(cfg)) }
}

// WithClientOptions passes options to the client the predictor makes (timeouts, retries, dial options).
func WithClientOptions(opts ...inference.Option) Option {
	return func(o *options) { o.clientOpts = append(o.clientOpts, opts...) }
}

// WithModelVersion asks a pinned version of bandwidth_predictor to answer.
func WithModelVersion(version string) Option {
	return func(o *options) { o.callOptions = append(o.callOptions, inference.WithVersion(version)) }
}

// WithModelLabel asks the version a label (stable, canary...) points at to answer.
func WithModelLabel(label string) Option {
	return func(o *options) { o.callOptions = append(o.callOptions, inference.WithLabel(label)) }
}

// WithSourceOrder sets the sources tried for each prediction and their order (default embedded, remote, rule:
// see inference.Chain); a source not named is not used, e.g. WithSourceOrder(inference.SourceRemote) for the
// service alone.
func WithSourceOrder(order ...inference.Source) Option {
	return func(o *options) { o.order = append([]inference.Source(nil), order...) }
}

// WithChainMetrics makes the predictor count answers and fallbacks into m (shared by several drop-ins and
// registered once with Prometheus); otherwise each predictor has its own (LSTMPredictor.Metrics).
func WithChainMetrics(m *inference.ChainMetrics) Option { return func(o *options) { o.metrics = m } }

// WithLocalConfig passes settings (the libonnxruntime path) to the local runtime that opens a model path.
func WithLocalConfig(cfg inference.LocalConfig) Option { return func(o *options) { o.local = cfg } }

// WithLocalCache runs the service's bandwidth_predictor versions in-process: they are synced from the service
// (WithTarget, a target modelPath, $DWCP_INFERENCE_TARGET or 127.0.0.1:50051) into dir and answer first, the
// service second, DWCP's rule last; new versions, promotes and splits on the service follow within a sync. The
// local runtime must be registered (import _ ".../clients/go/embedded"). The constructor waits a few seconds
// at most for the first sync (LocalConfig.SyncWait); until the model is in dir, the service answers. While the
// service is down the cache answers, also after a restart. It replaces a modelPath on disk.
func WithLocalCache(dir string) Option { return func(o *options) { o.cacheDir = dir } }

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// isTarget reports whether modelPath names a service (it has a ':' and is not a .onnx file) rather than a
// model on disk.
func isTarget(modelPath string) bool {
	return strings.Contains(modelPath, ":") && !strings.HasSuffix(modelPath, ".onnx")
}

// namedTarget is the service address the options, modelPath or the environment name: WithTarget, else
// modelPath when it is a gRPC target, else $DWCP_INFERENCE_TARGET; "" when none does.
func (o options) namedTarget(modelPath string) string {
	if o.target != "" {
		return o.target
	}
	if isTarget(modelPath) {
		return modelPath
	}
	return os.Getenv(TargetEnv)
}
