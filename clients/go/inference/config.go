// Package inference is the typed Go client of the DWCP inference service (dwcp.inference.v1).
//
// One method per RPC, context first. Connection settings are functional options given to New; per-call
// variations are CallOptions. Calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED are retried with
// exponential backoff, within a retry budget shared by the client's calls (WithRetryThrottling); no other
// status is retried.
//
// Answerer is what answers an RPC in the server's types: the client (Remote), a local runtime registered by
// the cgo package clients/go/embedded (RegisterLocal, OpenLocal), or a drop-in's DWCP rule. A Chain asks its
// Answerers in order (embedded, remote, rule by default), moves on only when one cannot answer here, says
// which Source answered, and counts answers and fallbacks for Prometheus (ChainMetrics).
package inference

import (
	"crypto/tls"
	"time"

	"google.golang.org/grpc"
)

// Config holds the connection settings. Build it with Options; the zero value of each field means its default.
type Config struct {
	// Target is a gRPC target: "host:port", or "dns:///name.namespace.svc:50051" to balance round-robin over
	// every address the name resolves to (a Kubernetes headless Service).
	Target string
	// Timeout bounds each call, retries included, unless the context's deadline is earlier. Default 2s.
	Timeout time.Duration
	// MaxAttempts is the number of tries of a call (1 means no retry). Default 3.
	MaxAttempts int
	// Backoff is the wait before the first retry; it doubles for each further one, with jitter. Default 50ms.
	Backoff time.Duration
	// TLS, when set, secures the connection; otherwise it is plaintext.
	TLS *tls.Config
	// KeepaliveTime is how often an idle connection is pinged. Default 30s.
	KeepaliveTime time.Duration
	// DialOptions are appended to the client's own.
	DialOptions []grpc.DialOption
	// ThrottleMaxTokens and ThrottleTokenRatio are the retry budget, as gRPC's retryThrottling: each failed
	// attempt takes a token, each success returns ThrottleTokenRatio, and retries stop while half or fewer of
	// the tokens remain. Default 100 and 0.1: enough for the calls in flight to a replica that dies (with 10,
	// eight concurrent calls failing at once spent it and were not retried). ThrottleMaxTokens < 0: no budget.
	ThrottleMaxTokens, ThrottleTokenRatio float64
}

// Option sets a Config field.
type Option func(*Config)

// WithTarget sets the server address (default "127.0.0.1:50051").
func WithTarget(target string) Option { return func(c *Config) { c.Target = target } }

// WithTimeout bounds each call, retries included.
func WithTimeout(d time.Duration) Option { return func(c *Config) { c.Timeout = d } }

// WithRetries sets how many times a call is tried and the first backoff.
func WithRetries(maxAttempts int, backoff time.Duration) Option {
	return func(c *Config) { c.MaxAttempts, c.Backoff = maxAttempts, backoff }
}

// WithRetryThrottling sets the retry budget shared by all calls of the client (see Config); maxTokens < 0
// turns it off.
func WithRetryThrottling(maxTokens, tokenRatio float64) Option {
	return func(c *Config) { c.ThrottleMaxTokens, c.ThrottleTokenRatio = maxTokens, tokenRatio }
}

// WithTLS secures the connection with the given configuration (server CA, client certificate for mTLS).
func WithTLS(cfg *tls.Config) Option { return func(c *Config) { c.TLS = cfg } }

// WithKeepalive sets how often an idle connection is pinged.
func WithKeepalive(every time.Duration) Option { return func(c *Config) { c.KeepaliveTime = every } }

// WithDialOptions adds raw gRPC dial options.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *Config) { c.DialOptions = append(c.DialOptions, opts...) }
}

func newConfig(opts []Option) Config {
	c := Config{Target: "127.0.0.1:50051", Timeout: 2 * time.Second, MaxAttempts: 3, Backoff: 50 * time.Millisecond,
		KeepaliveTime: 30 * time.Second, ThrottleMaxTokens: 100, ThrottleTokenRatio: 0.1}
	for _, o := range opts {
		o(&c)
	}
	if c.MaxAttempts < 1 {
		c.MaxAttempts = 1
	}
	return c
}

// CallOption changes one call.
type CallOption func(*callConfig)

type callConfig struct {
	timeout time.Duration
	model   string // version
	label   string
}

// WithCallTimeout bounds this call, retries included.
func WithCallTimeout(d time.Duration) CallOption { return func(c *callConfig) { c.timeout = d } }

// WithVersion asks a specific model version to answer.
func WithVersion(version string) CallOption { return func(c *callConfig) { c.model = version } }

// WithLabel asks the version a label points at to answer.
func WithLabel(label string) CallOption { return func(c *callConfig) { c.label = label } }
