package inference

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// CheckHealth asks the server's grpc.health.v1 service whether model (or, when empty, the server) is serving:
// nil only when the server answers SERVING. A client made by NewFromClient has no health service to ask and
// returns FAILED_PRECONDITION.
func (c *client) CheckHealth(ctx context.Context, model string) error {
	if c.conn == nil {
		return status.Error(codes.FailedPrecondition,
			"health unknown: this client wraps a generated client, not a connection it can ask")
	}
	ctx, cancel := context.WithTimeout(ctx, max(c.cfg.Timeout, time.Second))
	defer cancel()
	var resp *healthpb.HealthCheckResponse
	err := withRetry(ctx, c.cfg.MaxAttempts, c.cfg.Backoff, c.throttle, func(ctx context.Context) error {
		var err error
		resp, err = healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: model})
		return err
	})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%q is %s, not SERVING", model, resp.GetStatus())
	}
	return nil
}
