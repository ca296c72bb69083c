package embedded

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/prediction"
)

// quantileRepo is a repository holding one bandwidth version with quantile outputs (p10/p50/p90, issue 18),
// trained by the real CLI on three generated traces in mahimahi's format (about 5 s).
func quantileRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	traces, repo := filepath.Join(dir, "traces"), filepath.Join(dir, "repo")
	if err := os.MkdirAll(traces, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(18, 1))
	for k := 0; k < 3; k++ {
		var b strings.Builder
		level := 0.0
		for s := 0; s < 300; s++ { // a random walk in log throughput around 1-3 Mbit/s, one second at a time
			level += rng.NormFloat64() * 0.1
			mbps := float64(1+k) * math.Exp(level) * (0.6 + 0.8*rng.Float64())
			for p := 0; p < int(mbps*1e6/12000); p++ { // 1500-byte delivery opportunities in this second
				b.WriteString(strconv.Itoa(s*1000 + p*1000/int(mbps*1e6/12000)))
				b.WriteByte('\n')
			}
		}
		if err := os.WriteFile(filepath.Join(traces, fmt.Sprintf("trace-%d.up", k)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(servertest.Binary(t), "train", "bandwidth", "--data", traces, "--format", "mahimahi",
		"--out", repo, "--force", "--quick").CombinedOutput()
	if err != nil {
		t.Fatalf("training a quantile version: %v\n%s", err, out)
	}
	return repo
}

// Same interval as the server: a version with quantile outputs answers the same p10, p90 (set, not just non-zero)
// and calibrated confidence in-process as the server does, singly and in batches.
func TestSameIntervalAsTheServer(t *testing.T) {
	needLibrary(t)
	repo := quantileRepo(t)
	r := open(t, repo)
	srv := servertest.StartWithAdmin(t, repo)
	client := pb.NewInferenceServiceClient(servertest.Dial(t, srv.Addr()))
	meta, err := readMetadata(filepath.Join(repo, BandwidthModel, "1"))
	if err != nil {
		t.Fatal(err)
	}
	coverage, ok := meta.decisionFields["interval_coverage"]
	if !ok {
		t.Fatal("the trained version states no interval_coverage")
	}
	rng := rand.New(rand.NewPCG(18, 2))
	var reqs []proto.Message
	for i := 0; i < 40; i++ {
		reqs = append(reqs, randomRequest(rng, BandwidthModel, meta))
	}
	reqs = append(reqs, batchOf(reqs[:20]), batchOf(reqs[20:]))
	for i, req := range reqs {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		want, werr := remote(ctx, client, req)
		cancel()
		got, gerr := call(context.Background(), r, req)
		if werr != nil || gerr != nil {
			t.Fatalf("request %d: server %v, embedded %v", i, werr, gerr)
		}
		if diff := differences(fmt.Sprintf("%T", got), got.ProtoReflect(), want.ProtoReflect()); len(diff) > 0 {
			t.Errorf("request %d answered differently (embedded vs server):\n%s", i, strings.Join(diff, "\n"))
		}
		var items []*pb.BandwidthPrediction
		switch g := got.(type) {
		case *pb.PredictBandwidthResponse:
			items = []*pb.BandwidthPrediction{g.GetPrediction()}
		case *pb.PredictBandwidthBatchResponse:
			items = g.GetPredictions()
		}
		for _, p := range items {
			if p.PredictedBandwidthP10Mbps == nil || p.PredictedBandwidthP90Mbps == nil {
				t.Fatalf("request %d: no interval in the embedded answer: %v", i, p)
			}
			if p.GetPredictedBandwidthP10Mbps() > p.GetPredictedBandwidthP90Mbps() || p.GetConfidence() != coverage {
				t.Errorf("request %d: p10 %v, p90 %v, confidence %v (the version's coverage %v)", i,
					p.GetPredictedBandwidthP10Mbps(), p.GetPredictedBandwidthP90Mbps(), p.GetConfidence(), coverage)
			}
		}
	}
}

// The drop-in's BandwidthPrediction carries the interval as LowerMbps and UpperMbps, from the service and from
// the version run in-process alike; DWCP's rule gives none.
func TestTheDropInAnswersTheInterval(t *testing.T) {
	needLibrary(t)
	repo := quantileRepo(t)
	srv := servertest.StartWithAdmin(t, repo)
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var history []prediction.NetworkSample
	for i := 0; i < 30; i++ {
		history = append(history, prediction.NetworkSample{Timestamp: start.Add(time.Duration(i) * time.Second),
			BandwidthMbps: 2 + math.Sin(float64(i))})
	}
	remote, err := prediction.NewLSTMPredictor("", prediction.WithTarget(srv.Addr()),
		prediction.WithSourceOrder(inference.SourceRemote))
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	local, err := prediction.NewLSTMPredictor(repo, prediction.WithSourceOrder(inference.SourceEmbedded))
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	rule, err := prediction.NewLSTMPredictor("", prediction.WithTarget(srv.Addr()),
		prediction.WithSourceOrder(inference.SourceRule))
	if err != nil {
		t.Fatal(err)
	}
	defer rule.Close()
	var answers []*prediction.BandwidthPrediction
	for _, p := range []*prediction.LSTMPredictor{remote, local} {
		a, err := p.Predict(history)
		if err != nil {
			t.Fatal(err)
		}
		if a.LowerMbps == nil || a.UpperMbps == nil || *a.LowerMbps > *a.UpperMbps {
			t.Fatalf("%s: interval %v, %v", a.Source, a.LowerMbps, a.UpperMbps)
		}
		answers = append(answers, a)
	}
	if answers[0].Source != inference.SourceRemote || answers[1].Source != inference.SourceEmbedded {
		t.Fatalf("sources %s, %s", answers[0].Source, answers[1].Source)
	}
	if math.Abs(*answers[0].LowerMbps-*answers[1].LowerMbps) > 1e-5 ||
		math.Abs(*answers[0].UpperMbps-*answers[1].UpperMbps) > 1e-5 || answers[0].Confidence != answers[1].Confidence {
		t.Errorf("service %v-%v (%v), in-process %v-%v (%v)", *answers[0].LowerMbps, *answers[0].UpperMbps,
			answers[0].Confidence, *answers[1].LowerMbps, *answers[1].UpperMbps, answers[1].Confidence)
	}
	a, err := rule.Predict(history)
	if err != nil {
		t.Fatal(err)
	}
	if a.Source != inference.SourceRule || a.LowerMbps != nil || a.UpperMbps != nil {
		t.Errorf("the rule's answer: source %s, interval %v, %v", a.Source, a.LowerMbps, a.UpperMbps)
	}
}
