package inference

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// Answerer answers the inference RPCs with the server's request and response types. The embedded runtime
// (clients/go/embedded), the remote client (Remote) and each drop-in's DWCP rule are Answerers; a Chain tries
// them in order.
type Answerer interface {
	PredictBandwidth(ctx context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error)
	PredictBandwidthBatch(ctx context.Context, req *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, error)
	SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error)
	SelectCompressionBatch(ctx context.Context, req *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, error)
	DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error)
	DetectAnomalyBatch(ctx context.Context, req *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, error)
	DetectHighLatency(ctx context.Context, req *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error)
	DetectHighLatencyBatch(ctx context.Context, req *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, error)
}

// Source names where an answer came from.
type Source string

const (
	// SourceEmbedded is the model run in-process by a registered local runtime (RegisterLocal).
	SourceEmbedded Source = "embedded"
	// SourceRemote is the inference service.
	SourceRemote Source = "remote"
	// SourceRule is DWCP's own rule, written in the drop-in: it needs no model and always answers what it can.
	SourceRule Source = "rule"
)

// ErrNotLoaded is what a local runtime returns (wrapped, or as its cause) when it has no loaded version of the
// model a call needs: the chain then asks the next source.
var ErrNotLoaded = errors.New("inference: model not loaded")

// Remote adapts a client to an Answerer; opts apply to every call (a pinned version or label).
func Remote(c Client, opts ...CallOption) Answerer { return remote{c: c, opts: opts} }

type remote struct {
	c    Client
	opts []CallOption
}

func (r remote) PredictBandwidth(ctx context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	return r.c.PredictBandwidth(ctx, req, r.opts...)
}

func (r remote) PredictBandwidthBatch(ctx context.Context, req *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, error) {
	return r.c.PredictBandwidthBatch(ctx, req, r.opts...)
}

func (r remote) SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
	return r.c.SelectCompression(ctx, req, r.opts...)
}

func (r remote) SelectCompressionBatch(ctx context.Context, req *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, error) {
	return r.c.SelectCompressionBatch(ctx, req, r.opts...)
}

func (r remote) DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	return r.c.DetectAnomaly(ctx, req, r.opts...)
}

func (r remote) DetectAnomalyBatch(ctx context.Context, req *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, error) {
	return r.c.DetectAnomalyBatch(ctx, req, r.opts...)
}

func (r remote) DetectHighLatency(ctx context.Context, req *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error) {
	return r.c.DetectHighLatency(ctx, req, r.opts...)
}

func (r remote) DetectHighLatencyBatch(ctx context.Context, req *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, error) {
	return r.c.DetectHighLatencyBatch(ctx, req, r.opts...)
}

// UnimplementedAnswerer answers every RPC with UNIMPLEMENTED (which a Chain passes over). A rule that answers
// one RPC embeds it and defines that RPC's method.
type UnimplementedAnswerer struct{}

func unimplemented(rpc string) error {
	return status.Errorf(codes.Unimplemented, "%s: this source has no rule for it", rpc)
}

func (UnimplementedAnswerer) PredictBandwidth(context.Context, *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	return nil, unimplemented("PredictBandwidth")
}

func (UnimplementedAnswerer) PredictBandwidthBatch(context.Context, *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, error) {
	return nil, unimplemented("PredictBandwidthBatch")
}

func (UnimplementedAnswerer) SelectCompression(context.Context, *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
	return nil, unimplemented("SelectCompression")
}

func (UnimplementedAnswerer) SelectCompressionBatch(context.Context, *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, error) {
	return nil, unimplemented("SelectCompressionBatch")
}

func (UnimplementedAnswerer) DetectAnomaly(context.Context, *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	return nil, unimplemented("DetectAnomaly")
}

func (UnimplementedAnswerer) DetectAnomalyBatch(context.Context, *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, error) {
	return nil, unimplemented("DetectAnomalyBatch")
}

func (UnimplementedAnswerer) DetectHighLatency(context.Context, *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error) {
	return nil, unimplemented("DetectHighLatency")
}

func (UnimplementedAnswerer) DetectHighLatencyBatch(context.Context, *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, error) {
	return nil, unimplemented("DetectHighLatencyBatch")
}
