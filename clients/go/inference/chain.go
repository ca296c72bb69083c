package inference

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// Provider is one source of a Chain.
type Provider struct {
	Source   Source
	Answerer Answerer
}

// DefaultOrder is the order a Chain tries its sources in unless WithOrder says otherwise.
var defaultOrder = []Source{SourceEmbedded, SourceRemote, SourceRule}

// DefaultOrder returns embedded, remote, rule: the in-process model first, the service when it cannot answer,
// DWCP's rule when neither can.
func DefaultOrder() []Source { return slices.Clone(defaultOrder) }

// Chain answers each call from the first of its sources that can. It moves to the next source only on an error
// that means "cannot answer here" (see CannotAnswerHere); any other error, INVALID_ARGUMENT above all (a bad
// request is bad everywhere), is returned at once. Every answer comes with the Source that gave it, and the
// chain counts answers and fallbacks per RPC and source (Metrics). Safe for concurrent use.
type Chain struct {
	providers []Provider
	metrics   *ChainMetrics
	// answered[rpc*len(providers)+i] is provider i's answer counter for rpc, resolved at its first answer
	// (a series appears once it counts) and then read without the label lookup.
	answered []atomic.Pointer[counterRef]
}

type counterRef struct{ prometheus.Counter }

// The methods of an Answerer, as indices of rpcNames.
const (
	rpcPredictBandwidth = iota
	rpcPredictBandwidthBatch
	rpcSelectCompression
	rpcSelectCompressionBatch
	rpcDetectAnomaly
	rpcDetectAnomalyBatch
	rpcDetectHighLatency
	rpcDetectHighLatencyBatch
)

var rpcNames = []string{"PredictBandwidth", "PredictBandwidthBatch", "SelectCompression", "SelectCompressionBatch",
	"DetectAnomaly", "DetectAnomalyBatch", "DetectHighLatency", "DetectHighLatencyBatch"}

func (c *Chain) countAnswer(rpc, i int) {
	slot := &c.answered[rpc*len(c.providers)+i]
	ref := slot.Load()
	if ref == nil {
		ref = &counterRef{c.metrics.answers.WithLabelValues(rpcNames[rpc], string(c.providers[i].Source))}
		slot.Store(ref)
	}
	ref.Inc()
}

// ChainOption configures a Chain.
type ChainOption func(*chainConfig)

type chainConfig struct {
	order   []Source
	metrics *ChainMetrics
}

// WithOrder sets the order sources are tried in; a source not named is not used.
func WithOrder(order ...Source) ChainOption {
	return func(c *chainConfig) { c.order = slices.Clone(order) }
}

// WithChainMetrics makes the chain count into m (shared by several chains, registered once).
func WithChainMetrics(m *ChainMetrics) ChainOption { return func(c *chainConfig) { c.metrics = m } }

// NewChain returns a chain of the providers with an Answerer, tried in the default order (embedded, remote,
// rule) or WithOrder's. It fails when a source is given twice or none is left.
func NewChain(providers []Provider, opts ...ChainOption) (*Chain, error) {
	cfg := chainConfig{order: defaultOrder}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.metrics == nil {
		cfg.metrics = NewChainMetrics()
	}
	bySource := map[Source]Answerer{}
	for _, p := range providers {
		if p.Answerer == nil {
			continue
		}
		if _, dup := bySource[p.Source]; dup {
			return nil, fmt.Errorf("inference: chain: source %q given twice", p.Source)
		}
		bySource[p.Source] = p.Answerer
	}
	c := &Chain{metrics: cfg.metrics}
	for _, s := range cfg.order {
		if a, ok := bySource[s]; ok {
			c.providers = append(c.providers, Provider{Source: s, Answerer: a})
			delete(bySource, s)
		}
	}
	if len(c.providers) == 0 {
		return nil, errors.New("inference: chain: no source to answer from")
	}
	c.answered = make([]atomic.Pointer[counterRef], len(rpcNames)*len(c.providers))
	return c, nil
}

// Sources lists the chain's sources in the order they are tried.
func (c *Chain) Sources() []Source {
	out := make([]Source, len(c.providers))
	for i, p := range c.providers {
		out[i] = p.Source
	}
	return out
}

// Metrics is the chain's counters, a prometheus.Collector for the caller to register.
func (c *Chain) Metrics() *ChainMetrics { return c.metrics }

// CannotAnswerHere reports whether err means that a source cannot answer this call while another might, and
// why (the fallback reason counted): UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, NOT_FOUND (a model or
// version the source lacks), UNIMPLEMENTED (a source with no rule for the RPC) and ErrNotLoaded (a local
// runtime with no loaded version). Anything else — INVALID_ARGUMENT, INTERNAL, a canceled call — is an answer
// the next source would not change.
func CannotAnswerHere(err error) (reason string, ok bool) {
	if errors.Is(err, ErrNotLoaded) {
		return "not_loaded", true
	}
	if errors.Is(err, context.Canceled) {
		return "", false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "deadline_exceeded", true
	}
	switch code := status.Code(err); code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.NotFound, codes.Unimplemented:
		return codeName(code), true
	}
	return "", false
}

// codeName is a status code as a label value: "resource_exhausted".
func codeName(code codes.Code) string {
	var b strings.Builder
	for i, r := range code.String() {
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Trace records, for one call, the sources the chain passed over and why (WithTrace).
type Trace struct{ Skipped []Skipped }

// Skipped is a source that could not answer a call.
type Skipped struct {
	Source Source
	Reason string // as counted in dwcp_client_fallbacks_total
	Err    error
}

type traceKey struct{}

// WithTrace returns a context under which a chain call records the sources it passed over into t.
func WithTrace(ctx context.Context, t *Trace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

// answer runs one call through the chain.
func answer[Req, Resp any](c *Chain, ctx context.Context, rpcIndex int, req Req,
	call func(Answerer, context.Context, Req) (Resp, error)) (Resp, Source, error) {
	var zero Resp
	rpc := rpcNames[rpcIndex]
	var failures []string
	var last error
	for i, p := range c.providers {
		resp, err := call(p.Answerer, ctx, req)
		if err == nil {
			c.countAnswer(rpcIndex, i)
			return resp, p.Source, nil
		}
		reason, next := CannotAnswerHere(err)
		if !next {
			c.metrics.errors.WithLabelValues(rpc, string(p.Source), codeName(status.Code(err))).Inc()
			return zero, p.Source, err
		}
		c.metrics.fallbacks.WithLabelValues(rpc, string(p.Source), reason).Inc()
		if t, ok := ctx.Value(traceKey{}).(*Trace); ok {
			t.Skipped = append(t.Skipped, Skipped{Source: p.Source, Reason: reason, Err: err})
		}
		failures = append(failures, fmt.Sprintf("%s: %v", p.Source, err))
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	c.metrics.unanswered.WithLabelValues(rpc).Inc()
	code := status.Code(last)
	if code == codes.Unknown {
		code = codes.Unavailable
	}
	return zero, "", status.Errorf(code, "%s: no source could answer (%s)", rpc, strings.Join(failures, "; "))
}

func (c *Chain) PredictBandwidth(ctx context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, Source, error) {
	return answer(c, ctx, rpcPredictBandwidth, req, Answerer.PredictBandwidth)
}

func (c *Chain) PredictBandwidthBatch(ctx context.Context, req *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, Source, error) {
	return answer(c, ctx, rpcPredictBandwidthBatch, req, Answerer.PredictBandwidthBatch)
}

func (c *Chain) SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, Source, error) {
	return answer(c, ctx, rpcSelectCompression, req, Answerer.SelectCompression)
}

func (c *Chain) SelectCompressionBatch(ctx context.Context, req *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, Source, error) {
	return answer(c, ctx, rpcSelectCompressionBatch, req, Answerer.SelectCompressionBatch)
}

func (c *Chain) DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, Source, error) {
	return answer(c, ctx, rpcDetectAnomaly, req, Answerer.DetectAnomaly)
}

func (c *Chain) DetectAnomalyBatch(ctx context.Context, req *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, Source, error) {
	return answer(c, ctx, rpcDetectAnomalyBatch, req, Answerer.DetectAnomalyBatch)
}

func (c *Chain) DetectHighLatency(ctx context.Context, req *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, Source, error) {
	return answer(c, ctx, rpcDetectHighLatency, req, Answerer.DetectHighLatency)
}

func (c *Chain) DetectHighLatencyBatch(ctx context.Context, req *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, Source, error) {
	return answer(c, ctx, rpcDetectHighLatencyBatch, req, Answerer.DetectHighLatencyBatch)
}
