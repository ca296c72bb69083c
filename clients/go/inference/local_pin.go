package inference

import (
	"context"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// RepositoryOpener turns a runtime that opens model repositories (the embedded package's Open) into a
// LocalOpener for every path LocalOpener accepts: it opens the path's repository and, when the path names a
// version, pins the calls that name none to it (PinVersion). The embedded package registers itself with
//
//	inference.RegisterLocal(inference.RepositoryOpener(func(repo string, cfg inference.LocalConfig) (inference.LocalRuntime, error) {
//		return Open(repo, WithLibrary(cfg.Library))
//	}))
//
// (returning a nil *Runtime as a LocalRuntime on error is harmless here: the error is checked first).
func RepositoryOpener(open func(repo string, cfg LocalConfig) (LocalRuntime, error)) LocalOpener {
	return func(path string, cfg LocalConfig) (LocalRuntime, error) {
		loc, err := LocateModel(path)
		if err != nil {
			return nil, err
		}
		rt, err := open(loc.Repository, cfg)
		if err != nil {
			return nil, err
		}
		return PinVersion(rt, loc.Model, loc.Version), nil
	}
}

// PinVersion returns rt answering the calls to model (bandwidth_predictor, compression_selector,
// reliability_detector, consensus_latency) that name no version or label with version; rt itself when version
// is empty. The caller's request is never written: a pinned call is sent on a copy.
func PinVersion(rt LocalRuntime, model, version string) LocalRuntime {
	if version == "" {
		return rt
	}
	return pinned{rt: rt, model: model, sel: &pb.ModelSelector{Version: version}}
}

type pinned struct {
	rt    LocalRuntime
	model string
	sel   *pb.ModelSelector
}

// pin is req, or a copy of it naming the pinned version when it names none. Every request's selector is its
// field "model" (the GetModel the constraint asks for).
func pin[Req interface {
	proto.Message
	GetModel() *pb.ModelSelector
}](p pinned, model string, req Req) Req {
	if m := req.GetModel(); model != p.model || m.GetVersion() != "" || m.GetLabel() != "" {
		return req
	}
	req = proto.Clone(req).(Req)
	msg := req.ProtoReflect()
	msg.Set(msg.Descriptor().Fields().ByName("model"), protoreflect.ValueOfMessage(proto.Clone(p.sel).ProtoReflect()))
	return req
}

func (p pinned) Close() error { return p.rt.Close() }

func (p pinned) PredictBandwidth(ctx context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	return p.rt.PredictBandwidth(ctx, pin(p, "bandwidth_predictor", req))
}

func (p pinned) PredictBandwidthBatch(ctx context.Context, req *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, error) {
	return p.rt.PredictBandwidthBatch(ctx, pin(p, "bandwidth_predictor", req))
}

func (p pinned) SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
	return p.rt.SelectCompression(ctx, pin(p, "compression_selector", req))
}

func (p pinned) SelectCompressionBatch(ctx context.Context, req *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, error) {
	return p.rt.SelectCompressionBatch(ctx, pin(p, "compression_selector", req))
}

func (p pinned) DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	return p.rt.DetectAnomaly(ctx, pin(p, "reliability_detector", req))
}

func (p pinned) DetectAnomalyBatch(ctx context.Context, req *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, error) {
	return p.rt.DetectAnomalyBatch(ctx, pin(p, "reliability_detector", req))
}

func (p pinned) DetectHighLatency(ctx context.Context, req *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error) {
	return p.rt.DetectHighLatency(ctx, pin(p, "consensus_latency", req))
}

func (p pinned) DetectHighLatencyBatch(ctx context.Context, req *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, error) {
	return p.rt.DetectHighLatencyBatch(ctx, pin(p, "consensus_latency", req))
}
