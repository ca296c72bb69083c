package inference

import (
	"context"
	"fmt"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// CheckHealth asks the server's grpc.health.v1 service whether model (or, when empty, the server) is serving.
func CheckHealth(ctx context.Context, c *Client, model string) error {
	if c.conn == nil {
		return nil // a client around a caller's generated client: the caller owns its health
	}
	ctx, cancel := context.WithTimeout(ctx, max(c.cfg.Timeout, time.Second))
	defer cancel()
	var resp *healthpb.HealthCheckResponse
	err := withRetry(ctx, c.cfg.MaxAttempts, c.cfg.Backoff, func(ctx context.Context) error {
		var err error
		resp, err = healthpb.NewHealthClient(c.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: model})
		return err
	})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%q is %s", model, resp.GetStatus())
	}
	return nil
}
