package inference_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

// fakeSource answers DetectAnomaly with err, or with a verdict naming itself when err is nil.
type fakeSource struct {
	inference.UnimplementedAnswerer
	name  string
	err   error
	calls atomic.Int32
}

func (f *fakeSource) DetectAnomaly(context.Context, *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	f.calls.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	return &pb.DetectAnomalyResponse{Model: &pb.ModelRef{Name: f.name}}, nil
}

func chainOf(t *testing.T, embedded, remote, rule *fakeSource, opts ...inference.ChainOption) *inference.Chain {
	t.Helper()
	// Given in the reverse of the default order: the chain orders them.
	c, err := inference.NewChain([]inference.Provider{{Source: inference.SourceRule, Answerer: rule},
		{Source: inference.SourceRemote, Answerer: remote}, {Source: inference.SourceEmbedded, Answerer: embedded}},
		opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestChainTriesEmbeddedThenRemoteThenRule(t *testing.T) {
	embedded := &fakeSource{name: "embedded", err: fmt.Errorf("bandwidth_predictor: %w", inference.ErrNotLoaded)}
	remote := &fakeSource{name: "remote", err: status.Error(codes.Unavailable, "connection refused")}
	rule := &fakeSource{name: "rule"}
	c := chainOf(t, embedded, remote, rule)
	if got := c.Sources(); !slices.Equal(got, inference.DefaultOrder()) {
		t.Fatalf("order %v", got)
	}
	resp, src, err := c.DetectAnomaly(t.Context(), &pb.DetectAnomalyRequest{})
	if err != nil || src != inference.SourceRule || resp.GetModel().GetName() != "rule" {
		t.Fatalf("answer %v from %q: %v", resp, src, err)
	}
	remote.err = nil
	if _, src, _ := c.DetectAnomaly(t.Context(), &pb.DetectAnomalyRequest{}); src != inference.SourceRemote {
		t.Fatalf("remote back, answered by %q", src)
	}
	embedded.err = nil
	if _, src, _ := c.DetectAnomaly(t.Context(), &pb.DetectAnomalyRequest{}); src != inference.SourceEmbedded {
		t.Fatalf("embedded loaded, answered by %q", src)
	}
	m := c.Metrics()
	for _, want := range []struct {
		got, want float64
		what      string
	}{{m.Answers("DetectAnomaly", inference.SourceRule), 1, "rule answers"},
		{m.Answers("DetectAnomaly", inference.SourceRemote), 1, "remote answers"},
		{m.Answers("DetectAnomaly", inference.SourceEmbedded), 1, "embedded answers"},
		{m.Fallbacks("DetectAnomaly", inference.SourceEmbedded, "not_loaded"), 2, "embedded not loaded"},
		{m.Fallbacks("DetectAnomaly", inference.SourceRemote, "unavailable"), 1, "remote unavailable"}} {
		if want.got != want.want {
			t.Errorf("%s: %v, want %v", want.what, want.got, want.want)
		}
	}
}

func TestChainMovesOnOnlyWhenTheSourceCannotAnswer(t *testing.T) {
	for _, tc := range []struct {
		err    error
		moveOn bool
		reason string
	}{
		{status.Error(codes.Unavailable, "down"), true, "unavailable"},
		{status.Error(codes.DeadlineExceeded, "slow"), true, "deadline_exceeded"},
		{context.DeadlineExceeded, true, "deadline_exceeded"},
		{status.Error(codes.ResourceExhausted, "shed"), true, "resource_exhausted"},
		{status.Error(codes.NotFound, "unknown model consensus_latency"), true, "not_found"},
		{status.Error(codes.Unimplemented, "no rule"), true, "unimplemented"},
		{fmt.Errorf("wrapped: %w", inference.ErrNotLoaded), true, "not_loaded"},
		{status.Error(codes.InvalidArgument, "metrics.cpu_usage: 3 is outside [0, 1]"), false, ""},
		{status.Error(codes.Internal, "non-finite output"), false, ""},
		{status.Error(codes.FailedPrecondition, "disabled"), false, ""},
		{status.Error(codes.Canceled, "canceled"), false, ""},
		{context.Canceled, false, ""},
		{errors.New("plain"), false, ""},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			if reason, ok := inference.CannotAnswerHere(tc.err); ok != tc.moveOn || reason != tc.reason {
				t.Fatalf("CannotAnswerHere = %q %v", reason, ok)
			}
			first, second := &fakeSource{name: "embedded", err: tc.err}, &fakeSource{name: "remote"}
			c := chainOf(t, first, second, &fakeSource{name: "rule"})
			_, src, err := c.DetectAnomaly(t.Context(), &pb.DetectAnomalyRequest{})
			if tc.moveOn {
				if err != nil || src != inference.SourceRemote {
					t.Fatalf("expected the remote to answer: %q %v", src, err)
				}
				return
			}
			if !errors.Is(err, tc.err) && err != tc.err {
				t.Fatalf("expected the embedded source's error back, got %v", err)
			}
			if src != inference.SourceEmbedded || second.calls.Load() != 0 {
				t.Fatalf("source %q, remote called %d times", src, second.calls.Load())
			}
		})
	}
}

func TestChainFollowsTheCallersOrderAndSaysWhenNoSourceAnswers(t *testing.T) {
	embedded := &fakeSource{name: "embedded"}
	remote := &fakeSource{name: "remote", err: status.Error(codes.Unavailable, "connection refused")}
	rule := &fakeSource{name: "rule", err: status.Error(codes.ResourceExhausted, "rule busy")}
	metrics := inference.NewChainMetrics()
	c := chainOf(t, embedded, remote, rule, inference.WithOrder(inference.SourceRemote, inference.SourceRule),
		inference.WithChainMetrics(metrics))
	_, src, err := c.DetectAnomaly(t.Context(), &pb.DetectAnomalyRequest{})
	if err == nil || src != "" || embedded.calls.Load() != 0 {
		t.Fatalf("answered by %q (embedded called %d times): %v", src, embedded.calls.Load(), err)
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "remote: ") ||
		!strings.Contains(err.Error(), "rule: ") {
		t.Fatalf("error names neither source: %v", err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics)
	expected := `
# HELP dwcp_client_fallbacks_total Calls a source could not answer and passed to the next source, per RPC, source and reason.
# TYPE dwcp_client_fallbacks_total counter
dwcp_client_fallbacks_total{reason="resource_exhausted",rpc="DetectAnomaly",source="rule"} 1
dwcp_client_fallbacks_total{reason="unavailable",rpc="DetectAnomaly",source="remote"} 1
# HELP dwcp_client_unanswered_total Calls no source of the chain could answer, per RPC.
# TYPE dwcp_client_unanswered_total counter
dwcp_client_unanswered_total{rpc="DetectAnomaly"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "dwcp_client_fallbacks_total",
		"dwcp_client_unanswered_total"); err != nil {
		t.Fatal(err)
	}
	if _, err := inference.NewChain([]inference.Provider{{Source: inference.SourceRemote, Answerer: remote}},
		inference.WithOrder(inference.SourceRule)); err == nil {
		t.Fatal("a chain with no source in its order was built")
	}
}

func TestRemoteAnswererAsksTheClient(t *testing.T) {
	srv := &countingServer{}
	c, err := inference.NewChain([]inference.Provider{{Source: inference.SourceRemote,
		Answerer: inference.Remote(servertest.Bufconn(t, srv))}})
	if err != nil {
		t.Fatal(err)
	}
	if _, src, err := c.DetectAnomaly(t.Context(), &pb.DetectAnomalyRequest{}); err != nil || src != inference.SourceRemote || srv.calls.Load() != 1 {
		t.Fatalf("%q %v after %d calls", src, err, srv.calls.Load())
	}
}

type countingServer struct {
	pb.UnimplementedInferenceServiceServer
	calls atomic.Int32
}

func (s *countingServer) DetectAnomaly(context.Context, *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	s.calls.Add(1)
	return &pb.DetectAnomalyResponse{Verdict: &pb.AnomalyVerdict{}}, nil
}
