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

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// targetFor is the service address for modelPath: WithTarget, else modelPath when it is a gRPC target (it has
// a ':' and is not a .onnx file), else $DWCP_INFERENCE_TARGET, else 127.0.0.1:50051. A model file path, as
// DWCP's in-process predictor took, does not name a service.
func (o options) targetFor(modelPath string) string {
	if o.target != "" {
		return o.target
	}
	if strings.Contains(modelPath, ":") && !strings.HasSuffix(modelPath, ".onnx") {
		return modelPath
	}
	if t := os.Getenv(TargetEnv); t != "" {
		return t
	}
	return "127.0.0.1:50051"
}
