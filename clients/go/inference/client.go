package inference

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// Client calls the inference service. It is safe for concurrent use; make one per process and Close it.
type Client struct {
	raw  pb.InferenceServiceClient
	conn *grpc.ClientConn
	cfg  Config
}

// roundRobin balances calls over every address a dns:/// target resolves to.
const roundRobin = `{"loadBalancingConfig": [{"round_robin": {}}]}`

// New connects lazily to the target: the first call dials, and a server that is down makes calls fail with
// UNAVAILABLE (after retries), not New.
func New(opts ...Option) (*Client, error) {
	cfg := newConfig(opts)
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTime / 3}),
	}, cfg.DialOptions...)
	conn, err := grpc.NewClient(cfg.Target, dial...)
	if err != nil {
		return nil, err
	}
	return &Client{raw: pb.NewInferenceServiceClient(conn), conn: conn, cfg: cfg}, nil
}

// NewFromClient wraps a generated client (a fake in tests, or a connection the caller manages).
func NewFromClient(raw pb.InferenceServiceClient, opts ...Option) *Client {
	return &Client{raw: raw, cfg: newConfig(opts)}
}

// Close releases the connection, if the client made it.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Target is the address the client calls.
func (c *Client) Target() string { return c.cfg.Target }

// invoke applies call options, the timeout and retries to one RPC. A WithVersion or WithLabel option sets
// the request's model selector.
func invoke[Resp any](c *Client, ctx context.Context, opts []CallOption, sel **pb.ModelSelector,
	rpc func(context.Context) (Resp, error)) (Resp, error) {
	cc := callConfig{timeout: c.cfg.Timeout}
	for _, o := range opts {
		o(&cc)
	}
	if sel != nil && (cc.model != "" || cc.label != "") {
		*sel = &pb.ModelSelector{Version: cc.model, Label: cc.label}
	}
	if cc.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cc.timeout)
		defer cancel()
	}
	var resp Resp
	err := withRetry(ctx, c.cfg.MaxAttempts, c.cfg.Backoff, func(ctx context.Context) error {
		var err error
		resp, err = rpc(ctx)
		return err
	})
	return resp, err
}

// PredictBandwidth predicts a link's next sample from its recent history (at least the model's window).
func (c *Client) PredictBandwidth(ctx context.Context, req *pb.PredictBandwidthRequest, opts ...CallOption) (*pb.PredictBandwidthResponse, error) {
	return invoke(c, ctx, opts, &req.Model, func(ctx context.Context) (*pb.PredictBandwidthResponse, error) {
		return c.raw.PredictBandwidth(ctx, req)
	})
}

// PredictBandwidthBatch predicts many links in one call; answers come in request order.
func (c *Client) PredictBandwidthBatch(ctx context.Context, req *pb.PredictBandwidthBatchRequest, opts ...CallOption) (*pb.PredictBandwidthBatchResponse, error) {
	return invoke(c, ctx, opts, &req.Model, func(ctx context.Context) (*pb.PredictBandwidthBatchResponse, error) {
		return c.raw.PredictBandwidthBatch(ctx, req)
	})
}

// SelectCompression picks the codec and level for a payload on a link.
func (c *Client) SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest, opts ...CallOption) (*pb.SelectCompressionResponse, error) {
	return invoke(c, ctx, opts, &req.Model, func(ctx context.Context) (*pb.SelectCompressionResponse, error) {
		return c.raw.SelectCompression(ctx, req)
	})
}

// SelectCompressionBatch picks for many payloads in one call.
func (c *Client) SelectCompressionBatch(ctx context.Context, req *pb.SelectCompressionBatchRequest, opts ...CallOption) (*pb.SelectCompressionBatchResponse, error) {
	return invoke(c, ctx, opts, &req.Model, func(ctx context.Context) (*pb.SelectCompressionBatchResponse, error) {
		return c.raw.SelectCompressionBatch(ctx, req)
	})
}

// DetectAnomaly judges one node metric vector.
func (c *Client) DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest, opts ...CallOption) (*pb.DetectAnomalyResponse, error) {
	return invoke(c, ctx, opts, &req.Model, func(ctx context.Context) (*pb.DetectAnomalyResponse, error) {
		return c.raw.DetectAnomaly(ctx, req)
	})
}

// DetectAnomalyBatch judges many metric vectors in one call.
func (c *Client) DetectAnomalyBatch(ctx context.Context, req *pb.DetectAnomalyBatchRequest, opts ...CallOption) (*pb.DetectAnomalyBatchResponse, error) {
	return invoke(c, ctx, opts, &req.Model, func(ctx context.Context) (*pb.DetectAnomalyBatchResponse, error) {
		return c.raw.DetectAnomalyBatch(ctx, req)
	})
}

// DetectHighLatency judges one window of consensus samples.
func (c *Client) DetectHighLatency(ctx context.Context, req *pb.DetectHighLatencyRequest, opts ...CallOption) (*pb.DetectHighLatencyResponse, error) {
	return invoke(c, ctx, opts, &req.Model, func(ctx context.Context) (*pb.DetectHighLatencyResponse, error) {
		return c.raw.DetectHighLatency(ctx, req)
	})
}

// DetectHighLatencyBatch judges many windows in one call.
func (c *Client) DetectHighLatencyBatch(ctx context.Context, req *pb.DetectHighLatencyBatchRequest, opts ...CallOption) (*pb.DetectHighLatencyBatchResponse, error) {
	return invoke(c, ctx, opts, &req.Model, func(ctx context.Context) (*pb.DetectHighLatencyBatchResponse, error) {
		return c.raw.DetectHighLatencyBatch(ctx, req)
	})
}

// ReportOutcome tells the server what really happened to an earlier prediction, for live accuracy.
func (c *Client) ReportOutcome(ctx context.Context, req *pb.ReportOutcomeRequest, opts ...CallOption) (*pb.ReportOutcomeResponse, error) {
	return invoke(c, ctx, opts, nil, func(ctx context.Context) (*pb.ReportOutcomeResponse, error) {
		return c.raw.ReportOutcome(ctx, req)
	})
}
