package inference

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// One request shared by concurrent calls that select different versions: the caller's request is never
// written (run with -race), and each call is answered by the version it asked for.
func TestSharedRequestIsNeverWritten(t *testing.T) {
	c := bufClient(t, &flaky{})
	req := &pb.PredictBandwidthRequest{History: &pb.LinkHistory{Samples: make([]*pb.NetworkSample, 24)}}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(version string) {
			defer wg.Done()
			resp, err := c.PredictBandwidth(context.Background(), req, WithVersion(version))
			if err == nil && resp.GetModel().GetVersion() != version {
				err = status.Errorf(codes.Internal, "asked version %s, answered by %s", version, resp.GetModel().GetVersion())
			}
			errs <- err
		}([]string{"1", "2"}[i%2])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if req.Model != nil {
		t.Fatalf("the caller's request was changed: Model = %v", req.Model)
	}
}

// During an outage the retry budget runs out: later calls make one attempt each, not MaxAttempts.
func TestRetriesStopWhenTheBudgetIsSpent(t *testing.T) {
	down := status.Error(codes.Unavailable, "down")
	errs := make([]error, 100)
	for i := range errs {
		errs[i] = down
	}
	f := &fake{errs: errs}
	c := NewFromClient(f, WithRetries(3, time.Microsecond), WithRetryThrottling(10, 0.1))
	const calls = 10
	for i := 0; i < calls; i++ {
		if _, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}); status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// tokens 10 -> 7 (call 1: three attempts), -> 5 (call 2: two; 5 is not above half), then one each.
	if want := 3 + 2 + (calls - 2); f.calls != want {
		t.Fatalf("%d attempts for %d calls during an outage, want %d (without a budget: %d)", f.calls, calls, want, 3*calls)
	}
	before := f.calls
	if _, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}); status.Code(err) != codes.Unavailable || f.calls != before+1 {
		t.Fatalf("a call with the budget spent made %d attempts", f.calls-before)
	}
}

// Successes refill the budget, so retries come back after the outage.
func TestRetryBudgetRefillsOnSuccess(t *testing.T) {
	down := status.Error(codes.Unavailable, "down")
	f := &fake{errs: []error{down, down, down, down, down}}
	c := NewFromClient(f, WithRetries(3, time.Microsecond), WithRetryThrottling(10, 1))
	for i := 0; i < 2; i++ {
		c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}) // 3 + 2 attempts, tokens 5
	}
	if _, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}); err != nil || f.calls != 6 {
		t.Fatalf("after the outage: %v, %d attempts", err, f.calls) // succeeds at once: tokens 6
	}
	for i := 0; i < 3; i++ { // three successes: tokens 9
		c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{})
	}
	f.errs, f.calls = []error{down}, 0
	if _, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{}); err != nil || f.calls != 2 {
		t.Fatalf("with the budget refilled: %v after %d attempts, want a retry that succeeds", err, f.calls)
	}
}

func healthClient(t *testing.T, st healthpb.HealthCheckResponse_ServingStatus) Client {
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("bandwidth_predictor", st)
	healthpb.RegisterHealthServer(s, h)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	dial := func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }
	c, err := New(WithTarget("passthrough:///bufnet"), WithRetries(1, 0),
		WithDialOptions(grpc.WithContextDialer(dial), grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCheckHealthIsTrueOnlyWhenServing(t *testing.T) {
	ctx := context.Background()
	if err := healthClient(t, healthpb.HealthCheckResponse_SERVING).CheckHealth(ctx, "bandwidth_predictor"); err != nil {
		t.Fatalf("SERVING: %v", err)
	}
	if err := healthClient(t, healthpb.HealthCheckResponse_NOT_SERVING).CheckHealth(ctx, "bandwidth_predictor"); err == nil {
		t.Fatal("NOT_SERVING was healthy")
	}
	if err := healthClient(t, healthpb.HealthCheckResponse_SERVING).CheckHealth(ctx, "nope"); status.Code(err) != codes.NotFound {
		t.Fatalf("an unknown model: %v, want NotFound", err)
	}
	if err := NewFromClient(&fake{}).CheckHealth(ctx, ""); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a client with no connection said %v; it cannot know", err)
	}
}
