package prediction

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// bandwidthRule is the predictor's Fallback as the chain's last source.
type bandwidthRule struct {
	inference.UnimplementedAnswerer
	p *LSTMPredictor
}

func (r bandwidthRule) PredictBandwidth(_ context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	r.p.mu.Lock()
	f := r.p.fallback
	r.p.mu.Unlock()
	if f == nil {
		return nil, status.Error(codes.Unavailable, "prediction: no fallback rule is set")
	}
	history := make([]NetworkSample, len(req.GetHistory().GetSamples()))
	for i, s := range req.GetHistory().GetSamples() {
		history[i] = FromProto(s)
	}
	pred, err := f(history)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	name, version, _ := strings.Cut(pred.ModelVersion, ":")
	return &pb.PredictBandwidthResponse{Model: &pb.ModelRef{Name: name, Version: version},
		Prediction: &pb.BandwidthPrediction{PredictedBandwidthMbps: pred.PredictedBandwidthMbps,
			PredictedLatencyMs: pred.PredictedLatencyMs, PredictedPacketLoss: pred.PredictedPacketLoss,
			PredictedJitterMs: pred.PredictedJitterMs, Confidence: pred.Confidence,
			ValidUntil: timestamppb.New(pred.ValidUntil), PredictionTime: timestamppb.New(pred.PredictionTime)}}, nil
}

// FromProto converts a sample message to DWCP's type.
func FromProto(m *pb.NetworkSample) NetworkSample {
	s := NetworkSample{BandwidthMbps: m.GetBandwidthMbps(), LatencyMs: m.GetLatencyMs(), PacketLoss: m.GetPacketLoss(),
		JitterMs: m.GetJitterMs(), TimeOfDay: int(m.GetTimeOfDay()), DayOfWeek: int(m.GetDayOfWeek()),
		NodeID: m.GetNodeId(), PeerID: m.GetPeerId()}
	if m.GetTimestamp() != nil {
		s.Timestamp = m.GetTimestamp().AsTime()
	}
	return s
}
