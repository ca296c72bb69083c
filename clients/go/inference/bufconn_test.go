package inference

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// flaky is an in-process server whose first `failures` PredictBandwidth calls fail with code.
type flaky struct {
	pb.UnimplementedInferenceServiceServer
	failures int32
	code     codes.Code
	calls    atomic.Int32
}

func (f *flaky) PredictBandwidth(_ context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	if f.calls.Add(1) <= f.failures {
		return nil, status.Error(f.code, "not now")
	}
	n := len(req.GetHistory().GetSamples())
	return &pb.PredictBandwidthResponse{Model: &pb.ModelRef{Name: "bandwidth_predictor", Version: req.GetModel().GetVersion()},
		Prediction: &pb.BandwidthPrediction{PredictedBandwidthMbps: float64(n)}}, nil
}

func bufClient(t *testing.T, srv pb.InferenceServiceServer, opts ...Option) Client {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	pb.RegisterInferenceServiceServer(s, srv)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	dial := func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }
	c, err := New(append([]Option{WithTarget("passthrough:///bufnet"), WithRetries(3, time.Millisecond),
		WithDialOptions(grpc.WithContextDialer(dial), grpc.WithTransportCredentials(insecure.NewCredentials()))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestBufconnRetriesThroughARealServer(t *testing.T) {
	srv := &flaky{failures: 2, code: codes.Unavailable}
	c := bufClient(t, srv)
	resp, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{
		History: &pb.LinkHistory{Samples: make([]*pb.NetworkSample, 24)}}, WithVersion("3"))
	if err != nil || srv.calls.Load() != 3 {
		t.Fatalf("err %v after %d calls", err, srv.calls.Load())
	}
	if resp.GetPrediction().GetPredictedBandwidthMbps() != 24 || resp.GetModel().GetVersion() != "3" {
		t.Fatalf("the request was not carried intact: %v", resp)
	}
}

func TestBufconnPassesInvalidArgumentThrough(t *testing.T) {
	srv := &flaky{failures: 5, code: codes.InvalidArgument}
	c := bufClient(t, srv)
	_, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{})
	if status.Code(err) != codes.InvalidArgument || srv.calls.Load() != 1 {
		t.Fatalf("err %v after %d calls", err, srv.calls.Load())
	}
}

func TestBufconnUnimplementedIsNotRetried(t *testing.T) {
	srv := &flaky{}
	c := bufClient(t, srv)
	_, err := c.DetectAnomaly(context.Background(), &pb.DetectAnomalyRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("err %v", err)
	}
}
