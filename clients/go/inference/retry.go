package inference

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
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

// throttle is a retry budget shared by all calls of one client, with the semantics of gRPC's retryThrottling
// (gRFC A6): every attempt that fails with a retryable status takes a token, every success gives back
// tokenRatio, and a retry is allowed only while more than half of maxTokens remain. During an outage the
// tokens run out and each call makes a single attempt, so retries do not multiply the load on a struggling
// service; once calls succeed again the budget refills.
type throttle struct {
	mu                    sync.Mutex
	tokens, max, perOK    float64
	retries, denied, fail uint64
}

func newThrottle(cfg Config) *throttle {
	if cfg.ThrottleMaxTokens <= 0 {
		return nil
	}
	return &throttle{tokens: cfg.ThrottleMaxTokens, max: cfg.ThrottleMaxTokens, perOK: cfg.ThrottleTokenRatio}
}

// record accounts for one attempt's result and reports whether a retry may follow it.
func (t *throttle) record(err error) (mayRetry bool) {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.tokens = min(t.max, t.tokens+t.perOK)
		return false
	}
	if !retryable(err) {
		return false
	}
	t.tokens = max(0, t.tokens-1)
	t.fail++
	if t.tokens > t.max/2 {
		t.retries++
		return true
	}
	t.denied++
	return false
}

// withRetry runs call until it succeeds, fails with a status that is not retryable, runs out of attempts or
// of retry budget (t, nil for none), or ctx ends. Each attempt gets what is left of ctx.
func withRetry(ctx context.Context, attempts int, backoff time.Duration, t *throttle, call func(context.Context) error) error {
	var err error
	for i := 0; i < attempts; i++ {
		err = call(ctx)
		mayRetry := t.record(err)
		if err == nil || !retryable(err) {
			return err
		}
		if ctx.Err() != nil || i == attempts-1 || !mayRetry {
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
