package inference

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// Client calls the inference service. It is safe for concurrent use; make one per process and Close it.
// Implementations come from New or NewFromClient; a test may implement it with a fake.
type Client interface {
	// PredictBandwidth predicts a link's next sample from its recent history (at least the model's window).
	PredictBandwidth(ctx context.Context, req *pb.PredictBandwidthRequest, opts ...CallOption) (*pb.PredictBandwidthResponse, error)
	// PredictBandwidthBatch predicts many links in one call; answers come in request order.
	PredictBandwidthBatch(ctx context.Context, req *pb.PredictBandwidthBatchRequest, opts ...CallOption) (*pb.PredictBandwidthBatchResponse, error)
	// SelectCompression picks the codec and level for a payload on a link.
	SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest, opts ...CallOption) (*pb.SelectCompressionResponse, error)
	// SelectCompressionBatch picks for many payloads in one call.
	SelectCompressionBatch(ctx context.Context, req *pb.SelectCompressionBatchRequest, opts ...CallOption) (*pb.SelectCompressionBatchResponse, error)
	// DetectAnomaly judges one node metric vector.
	DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest, opts ...CallOption) (*pb.DetectAnomalyResponse, error)
	// DetectAnomalyBatch judges many metric vectors in one call.
	DetectAnomalyBatch(ctx context.Context, req *pb.DetectAnomalyBatchRequest, opts ...CallOption) (*pb.DetectAnomalyBatchResponse, error)
	// DetectHighLatency judges one window of consensus samples.
	DetectHighLatency(ctx context.Context, req *pb.DetectHighLatencyRequest, opts ...CallOption) (*pb.DetectHighLatencyResponse, error)
	// DetectHighLatencyBatch judges many windows in one call.
	DetectHighLatencyBatch(ctx context.Context, req *pb.DetectHighLatencyBatchRequest, opts ...CallOption) (*pb.DetectHighLatencyBatchResponse, error)
	// ReportOutcome tells the server what really happened to an earlier prediction, for live accuracy.
	ReportOutcome(ctx context.Context, req *pb.ReportOutcomeRequest, opts ...CallOption) (*pb.ReportOutcomeResponse, error)
	// CheckHealth asks grpc.health.v1 about model (the server when empty): nil only when the answer is SERVING.
	CheckHealth(ctx context.Context, model string) error
	// Features returns the design's ModelInferenceClient view; consensus windows come from deployment.
	Features(deployment ConsensusDeployment) ModelInferenceClient
	// Target is the address the client calls.
	Target() string
	// Close releases the connection, if the client made it.
	Close() error
}

// client is the Client over a gRPC connection.
type client struct {
	raw      pb.InferenceServiceClient
	conn     *grpc.ClientConn // nil when the caller gave the generated client
	cfg      Config
	throttle *throttle
}

var _ Client = (*client)(nil)

// roundRobin balances calls over every address a dns:/// target resolves to.
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// New connects lazily to the target: the first call dials, and a server that is down makes calls fail with
// UNAVAILABLE (after retries), not New.
func New(opts ...Option) (Client, error) {
	cfg := newConfig(opts)
	conn, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	return &client{raw: pb.NewInferenceServiceClient(conn), conn: conn, cfg: cfg, throttle: newThrottle(cfg)}, nil
}

// Dial returns a connection made with the client's settings (target, TLS, keepalive, balancing, dial options),
// for the server's other services, such as ModelDistribution (package modelsync). The caller closes it.
func Dial(opts ...Option) (*grpc.ClientConn, error) { return dial(newConfig(opts)) }

func dial(cfg Config) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTime / 3}),
	}, cfg.DialOptions...)
	return grpc.NewClient(cfg.Target, dial...)
}

// NewFromClient wraps a generated client (a fake in tests, or a connection the caller manages). Its CheckHealth
// has no health service to ask and always returns an error.
func NewFromClient(raw pb.InferenceServiceClient, opts ...Option) Client {
	cfg := newConfig(opts)
	return &client{raw: raw, cfg: cfg, throttle: newThrottle(cfg)}
}

func (c *client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

func (c *client) Target() string { return c.cfg.Target }

// invoke applies call options, the timeout and retries to one RPC. A WithVersion or WithLabel option is sent
// on a copy of the request (set by setModel): the caller's request is never written, so one request may be
// shared by concurrent calls.
func invoke[Req proto.Message, Resp any](c *client, ctx context.Context, opts []CallOption, req Req,
	setModel func(Req, *pb.ModelSelector), rpc func(context.Context, Req) (Resp, error)) (Resp, error) {
	cc := callConfig{timeout: c.cfg.Timeout}
	for _, o := range opts {
		o(&cc)
	}
	if setModel != nil && (cc.model != "" || cc.label != "") {
		req = proto.Clone(req).(Req)
		setModel(req, &pb.ModelSelector{Version: cc.model, Label: cc.label})
	}
	if cc.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cc.timeout)
		defer cancel()
	}
	var resp Resp
	err := withRetry(ctx, c.cfg.MaxAttempts, c.cfg.Backoff, c.throttle, func(ctx context.Context) error {
		var err error
		resp, err = rpc(ctx, req)
		return err
	})
	return resp, err
}

func (c *client) PredictBandwidth(ctx context.Context, req *pb.PredictBandwidthRequest, opts ...CallOption) (*pb.PredictBandwidthResponse, error) {
	return invoke(c, ctx, opts, req, func(r *pb.PredictBandwidthRequest, s *pb.ModelSelector) { r.Model = s },
		func(ctx context.Context, r *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
			return c.raw.PredictBandwidth(ctx, r)
		})
}

func (c *client) PredictBandwidthBatch(ctx context.Context, req *pb.PredictBandwidthBatchRequest, opts ...CallOption) (*pb.PredictBandwidthBatchResponse, error) {
	return invoke(c, ctx, opts, req, func(r *pb.PredictBandwidthBatchRequest, s *pb.ModelSelector) { r.Model = s },
		func(ctx context.Context, r *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, error) {
			return c.raw.PredictBandwidthBatch(ctx, r)
		})
}

func (c *client) SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest, opts ...CallOption) (*pb.SelectCompressionResponse, error) {
	return invoke(c, ctx, opts, req, func(r *pb.SelectCompressionRequest, s *pb.ModelSelector) { r.Model = s },
		func(ctx context.Context, r *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
			return c.raw.SelectCompression(ctx, r)
		})
}

func (c *client) SelectCompressionBatch(ctx context.Context, req *pb.SelectCompressionBatchRequest, opts ...CallOption) (*pb.SelectCompressionBatchResponse, error) {
	return invoke(c, ctx, opts, req, func(r *pb.SelectCompressionBatchRequest, s *pb.ModelSelector) { r.Model = s },
		func(ctx context.Context, r *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, error) {
			return c.raw.SelectCompressionBatch(ctx, r)
		})
}

func (c *client) DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest, opts ...CallOption) (*pb.DetectAnomalyResponse, error) {
	return invoke(c, ctx, opts, req, func(r *pb.DetectAnomalyRequest, s *pb.ModelSelector) { r.Model = s },
		func(ctx context.Context, r *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
			return c.raw.DetectAnomaly(ctx, r)
		})
}

func (c *client) DetectAnomalyBatch(ctx context.Context, req *pb.DetectAnomalyBatchRequest, opts ...CallOption) (*pb.DetectAnomalyBatchResponse, error) {
	return invoke(c, ctx, opts, req, func(r *pb.DetectAnomalyBatchRequest, s *pb.ModelSelector) { r.Model = s },
		func(ctx context.Context, r *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, error) {
			return c.raw.DetectAnomalyBatch(ctx, r)
		})
}

func (c *client) DetectHighLatency(ctx context.Context, req *pb.DetectHighLatencyRequest, opts ...CallOption) (*pb.DetectHighLatencyResponse, error) {
	return invoke(c, ctx, opts, req, func(r *pb.DetectHighLatencyRequest, s *pb.ModelSelector) { r.Model = s },
		func(ctx context.Context, r *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error) {
			return c.raw.DetectHighLatency(ctx, r)
		})
}

func (c *client) DetectHighLatencyBatch(ctx context.Context, req *pb.DetectHighLatencyBatchRequest, opts ...CallOption) (*pb.DetectHighLatencyBatchResponse, error) {
	return invoke(c, ctx, opts, req, func(r *pb.DetectHighLatencyBatchRequest, s *pb.ModelSelector) { r.Model = s },
		func(ctx context.Context, r *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, error) {
			return c.raw.DetectHighLatencyBatch(ctx, r)
		})
}

func (c *client) ReportOutcome(ctx context.Context, req *pb.ReportOutcomeRequest, opts ...CallOption) (*pb.ReportOutcomeResponse, error) {
	return invoke(c, ctx, opts, req, nil,
		func(ctx context.Context, r *pb.ReportOutcomeRequest) (*pb.ReportOutcomeResponse, error) {
			return c.raw.ReportOutcome(ctx, r)
		})
}
