package inference

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// fake answers PredictBandwidth with the errors it is given, in turn, then succeeds.
type fake struct {
	pb.InferenceServiceClient
	errs  []error
	calls int
	last  *pb.PredictBandwidthRequest
}

func (f *fake) PredictBandwidth(ctx context.Context, in *pb.PredictBandwidthRequest, _ ...grpc.CallOption) (*pb.PredictBandwidthResponse, error) {
	f.calls++
	f.last = in
	if f.calls <= len(f.errs) {
		return nil, f.errs[f.calls-1]
	}
	return &pb.PredictBandwidthResponse{Model: &pb.ModelRef{Name: "bandwidth_predictor", Version: "1"}}, nil
}

func TestRetriesUnavailableAndDeadlineExceeded(t *testing.T) {
	f := &fake{errs: []error{status.Error(codes.Unavailable, "down"), status.Error(codes.DeadlineExceeded, "slow")}}
	c := NewFromClient(f, WithRetries(3, time.Millisecond))
	resp, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{})
	if err != nil || resp.GetModel().GetVersion() != "1" || f.calls != 3 {
		t.Fatalf("got %v, %v after %d calls; want success on the third", resp, err, f.calls)
	}
}

func TestDoesNotRetryOtherCodes(t *testing.T) {
	f := &fake{errs: []error{status.Error(codes.InvalidArgument, "history.samples: expected at least 24")}}
	c := NewFromClient(f, WithRetries(5, time.Millisecond))
	_, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{})
	if status.Code(err) != codes.InvalidArgument || f.calls != 1 {
		t.Fatalf("got %v after %d calls; want InvalidArgument after one", err, f.calls)
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	down := status.Error(codes.Unavailable, "down")
	f := &fake{errs: []error{down, down, down, down}}
	c := NewFromClient(f, WithRetries(2, time.Millisecond))
	if _, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}); status.Code(err) != codes.Unavailable || f.calls != 2 {
		t.Fatalf("got %v after %d calls; want Unavailable after two", err, f.calls)
	}
}

func TestCallTimeoutBoundsRetries(t *testing.T) {
	down := status.Error(codes.Unavailable, "down")
	f := &fake{errs: []error{down, down, down, down, down, down}}
	c := NewFromClient(f, WithRetries(6, 200*time.Millisecond))
	start := time.Now()
	_, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}, WithCallTimeout(50*time.Millisecond))
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 150*time.Millisecond {
		t.Fatalf("got %v after %v; want DeadlineExceeded within the call timeout", err, time.Since(start))
	}
}

func TestVersionAndLabelSelectTheModel(t *testing.T) {
	f := &fake{}
	c := NewFromClient(f)
	if _, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}, WithVersion("7")); err != nil {
		t.Fatal(err)
	}
	if f.last.GetModel().GetVersion() != "7" {
		t.Fatalf("selector %v, want version 7", f.last.GetModel())
	}
	if _, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}, WithLabel("canary")); err != nil {
		t.Fatal(err)
	}
	if f.last.GetModel().GetLabel() != "canary" {
		t.Fatalf("selector %v, want label canary", f.last.GetModel())
	}
}

func TestFeatureLayoutsAreChecked(t *testing.T) {
	m := NewFromClient(&fake{}).Features(DefaultDeployment())
	ctx := context.Background()
	if _, err := m.PredictBandwidth(ctx, make([]float64, 7)); err == nil {
		t.Error("PredictBandwidth took 7 values, not a multiple of 6")
	}
	if _, err := m.SelectCompression(ctx, []float64{1, 1, 0, 9, 1, 1, 1}); err == nil {
		t.Error("SelectCompression took link type 9")
	}
	if _, _, err := m.DetectAnomaly(ctx, make([]float64, 3)); err == nil {
		t.Error("DetectAnomaly took 3 values")
	}
	if _, err := m.DetectHighLatency(ctx, nil); err == nil {
		t.Error("DetectHighLatency took no values")
	}
}

func TestAlgorithmMapsZstdLevels(t *testing.T) {
	for _, tc := range []struct {
		codec pb.Codec
		level int32
		want  int
	}{{pb.Codec_CODEC_NONE, 0, AlgorithmNone}, {pb.Codec_CODEC_LZ4, 0, AlgorithmLZ4},
		{pb.Codec_CODEC_ZSTD, 3, AlgorithmZstd}, {pb.Codec_CODEC_ZSTD, 19, AlgorithmZstdMax}} {
		if got := Algorithm(&pb.CompressionChoice{Codec: tc.codec, Level: tc.level}); got != tc.want {
			t.Errorf("%v level %d: got %d, want %d", tc.codec, tc.level, got, tc.want)
		}
	}
}

func TestContextErrorSaysTheDeadlinePassed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	err := contextError(ctx, errors.New("boom"))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
}

// answerAll answers every RPC with an empty response.
type answerAll struct{ pb.InferenceServiceClient }

func (answerAll) PredictBandwidth(context.Context, *pb.PredictBandwidthRequest, ...grpc.CallOption) (*pb.PredictBandwidthResponse, error) {
	return &pb.PredictBandwidthResponse{Prediction: &pb.BandwidthPrediction{}}, nil
}
func (answerAll) SelectCompression(context.Context, *pb.SelectCompressionRequest, ...grpc.CallOption) (*pb.SelectCompressionResponse, error) {
	return &pb.SelectCompressionResponse{Decision: &pb.CompressionDecision{Choice: &pb.CompressionChoice{}}}, nil
}
func (answerAll) DetectAnomaly(context.Context, *pb.DetectAnomalyRequest, ...grpc.CallOption) (*pb.DetectAnomalyResponse, error) {
	return &pb.DetectAnomalyResponse{Verdict: &pb.AnomalyVerdict{}}, nil
}
func (answerAll) DetectHighLatency(context.Context, *pb.DetectHighLatencyRequest, ...grpc.CallOption) (*pb.DetectHighLatencyResponse, error) {
	return &pb.DetectHighLatencyResponse{Verdict: &pb.LatencyVerdict{}}, nil
}
