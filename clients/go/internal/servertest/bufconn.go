package servertest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// Bufconn serves srv in-process (with a health service saying SERVING for the server and the four models) and returns a real
// client of it, for the tests that need no model. The server and client stop when the test ends.
func Bufconn(t testing.TB, srv pb.InferenceServiceServer, opts ...inference.Option) inference.Client {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	pb.RegisterInferenceServiceServer(s, srv)
	h := health.NewServer()
	for _, model := range []string{"bandwidth_predictor", "compression_selector", "reliability_detector",
		"consensus_latency"} {
		h.SetServingStatus(model, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(lis)
	dial := func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }
	c, err := inference.New(append([]inference.Option{inference.WithTarget("passthrough:///bufnet"),
		inference.WithRetries(2, time.Millisecond), inference.WithDialOptions(grpc.WithContextDialer(dial),
			grpc.WithTransportCredentials(insecure.NewCredentials()))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Stop() })
	return c
}
