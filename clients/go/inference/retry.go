package inference

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// retryable reports whether a call that failed with err may be tried again: only when the server could not be
// reached or did not answer in time. Everything else (bad input, unknown model...) would fail the same way.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// withRetry runs call until it succeeds, fails with a status that is not retryable, runs out of attempts, or
// ctx ends. Each attempt gets what is left of ctx.
func withRetry(ctx context.Context, attempts int, backoff time.Duration, call func(context.Context) error) error {
	var err error
	for i := 0; i < attempts; i++ {
		if err = call(ctx); err == nil || !retryable(err) {
			return err
		}
		if ctx.Err() != nil || i == attempts-1 {
			break
		}
		wait := backoff<<i + time.Duration(rand.Int64N(int64(backoff)+1))
		select {
		case <-ctx.Done():
			return contextError(ctx, err)
		case <-time.After(wait):
		}
	}
	return contextError(ctx, err)
}

// contextError turns the error of a call whose context ended into a status error that says so, keeping the
// last error the server gave.
func contextError(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	code := codes.Canceled
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	if err == nil || status.Code(err) == code {
		return status.Error(code, ctx.Err().Error())
	}
	return status.Errorf(code, "%v; last error: %v", ctx.Err(), err)
}
