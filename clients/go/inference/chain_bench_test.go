package inference_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// What the chain adds to a call: the first source answers, or two sources fail before the rule answers.
func BenchmarkChain(b *testing.B) {
	answer := &fakeSource{name: "rule"}
	down := &fakeSource{err: status.Error(codes.Unavailable, "down")}
	b.Run("source_alone", func(b *testing.B) { // the reference: the source called without a chain
		b.ReportAllocs()
		for b.Loop() {
			answer.DetectAnomaly(context.Background(), &pb.DetectAnomalyRequest{})
		}
	})
	for _, bc := range []struct {
		name                   string
		embedded, remote, rule *fakeSource
	}{{"first_source_answers", answer, down, down}, {"rule_after_two_fallbacks", down, down, answer}} {
		c, err := inference.NewChain([]inference.Provider{{Source: inference.SourceEmbedded, Answerer: bc.embedded},
			{Source: inference.SourceRemote, Answerer: bc.remote}, {Source: inference.SourceRule, Answerer: bc.rule}})
		if err != nil {
			b.Fatal(err)
		}
		req := &pb.DetectAnomalyRequest{}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.DetectAnomaly(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
