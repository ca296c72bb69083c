package prediction_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/prediction"
)

// fakeLocal stands in for the embedded runtime (which needs cgo and onnxruntime): it answers from "the model
// at path", or says the model is not loaded.
type fakeLocal struct {
	inference.UnimplementedAnswerer
	path      string
	notLoaded bool
	closed    bool
}

func (f *fakeLocal) PredictBandwidth(_ context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	if f.notLoaded {
		return nil, inference.ErrNotLoaded
	}
	if len(req.GetHistory().GetSamples()) < prediction.HistoryWindow {
		return nil, status.Error(codes.InvalidArgument, "history.samples: fewer than the window")
	}
	return &pb.PredictBandwidthResponse{Model: &pb.ModelRef{Name: "bandwidth_predictor", Version: "local"},
		Prediction: &pb.BandwidthPrediction{PredictedBandwidthMbps: 123, Confidence: 0.9}}, nil
}

func (f *fakeLocal) Close() error { f.closed = true; return nil }

var (
	openedMu sync.Mutex
	opened   []*fakeLocal
)

func init() {
	// As the embedded package does from its init.
	inference.RegisterLocal(func(path string, _ inference.LocalConfig) (inference.LocalRuntime, error) {
		loc, err := inference.LocateModel(path)
		if err != nil {
			return nil, err
		}
		f := &fakeLocal{path: filepath.Join(loc.Repository, loc.Model, loc.Version)}
		openedMu.Lock()
		defer openedMu.Unlock()
		opened = append(opened, f)
		return f, nil
	})
}

// versionDir makes <repo>/bandwidth_predictor/7 with a model.onnx and metadata.json.
func versionDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "bandwidth_predictor", "7")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.onnx", "metadata.json"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestModelPathRunsInProcessThroughTheRegisteredRuntime(t *testing.T) {
	t.Setenv(prediction.TargetEnv, "")
	dir := versionDir(t)
	p, err := prediction.NewLSTMPredictor(filepath.Join(dir, "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.Sources(); len(got) != 2 || got[0] != inference.SourceEmbedded || got[1] != inference.SourceRule {
		t.Fatalf("sources %v: a model path with no service named is embedded then rule", got)
	}
	pred, err := p.Predict(history(30, 500))
	if err != nil || pred.Source != inference.SourceEmbedded || pred.ModelVersion != "bandwidth_predictor:local" {
		t.Fatalf("%+v %v", pred, err)
	}
	openedMu.Lock()
	f := opened[len(opened)-1]
	openedMu.Unlock()
	if f.path != dir {
		t.Fatalf("runtime opened %s, want the version directory %s", f.path, dir)
	}
	// A bad request is bad everywhere: the rule is not asked.
	if _, err := p.Predict(history(3, 500)); status.Code(err) != codes.InvalidArgument || p.Fallbacks() != 0 {
		t.Fatalf("short history: %v, %d fallbacks", err, p.Fallbacks())
	}
	f.notLoaded = true
	pred, err = p.Predict(history(30, 500))
	if err != nil || pred.Source != inference.SourceRule || p.Fallbacks() != 1 {
		t.Fatalf("not loaded: %+v %v", pred, err)
	}
	if n := p.Metrics().Fallbacks("PredictBandwidth", inference.SourceEmbedded, "not_loaded"); n != 1 {
		t.Fatalf("not_loaded fallbacks %v", n)
	}
	p.Close()
	if !f.closed {
		t.Fatal("Close left the local runtime open")
	}
}

func TestModelPathAndServiceTogetherMakeAChain(t *testing.T) {
	dir := versionDir(t)
	p, err := prediction.NewLSTMPredictor(dir, prediction.WithTarget(servertest.Target(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want := inference.DefaultOrder()
	if got := p.Sources(); strings.Join(toStrings(got), ",") != strings.Join(toStrings(want), ",") {
		t.Fatalf("sources %v, want %v", got, want)
	}
	openedMu.Lock()
	f := opened[len(opened)-1]
	openedMu.Unlock()
	f.notLoaded = true
	pred, err := p.Predict(history(30, 500))
	if err != nil || pred.Source != inference.SourceRemote || !strings.HasPrefix(pred.ModelVersion, "bandwidth_predictor:") {
		t.Fatalf("%+v %v", pred, err)
	}
}

func TestMissingModelPathIsAnErrorUnlessAServiceIsNamed(t *testing.T) {
	t.Setenv(prediction.TargetEnv, "")
	missing := filepath.Join(t.TempDir(), "bandwidth_lstm.onnx")
	if _, err := prediction.NewLSTMPredictor(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing model path: %v", err)
	}
	t.Setenv(prediction.TargetEnv, servertest.Target(t))
	p, err := prediction.NewLSTMPredictor(missing)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.Sources(); len(got) != 2 || got[0] != inference.SourceRemote {
		t.Fatalf("sources %v", got)
	}
}

func toStrings(s []inference.Source) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

// The service dies mid-run: predictions continue from DWCP's rule, the counters say so, and the service
// answers again once it is back.
func TestAnswersContinueFromTheRuleWhileTheServiceIsDown(t *testing.T) {
	srv := servertest.Start(t)
	metrics := inference.NewChainMetrics()
	p, err := prediction.NewLSTMPredictor(srv.Addr(), prediction.WithChainMetrics(metrics),
		prediction.WithClientOptions(inference.WithRetries(1, time.Millisecond), inference.WithTimeout(2*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if pred, err := p.Predict(history(30, 500)); err != nil || pred.Source != inference.SourceRemote {
		t.Fatalf("before the outage: %+v %v", pred, err)
	}
	srv.Kill()
	for i := 0; i < 5; i++ {
		pred, err := p.Predict(history(30, 500))
		if err != nil || pred.Source != inference.SourceRule || pred.ModelVersion != "fallback:harmonic_mean_5" {
			t.Fatalf("during the outage, call %d: %+v %v", i, pred, err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics)
	expected := `
# HELP dwcp_client_answers_total Calls a source answered, per RPC and source (embedded, remote, rule).
# TYPE dwcp_client_answers_total counter
dwcp_client_answers_total{rpc="PredictBandwidth",source="remote"} 1
dwcp_client_answers_total{rpc="PredictBandwidth",source="rule"} 5
# HELP dwcp_client_fallbacks_total Calls a source could not answer and passed to the next source, per RPC, source and reason.
# TYPE dwcp_client_fallbacks_total counter
dwcp_client_fallbacks_total{reason="unavailable",rpc="PredictBandwidth",source="remote"} 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "dwcp_client_answers_total",
		"dwcp_client_fallbacks_total"); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	var last *prediction.BandwidthPrediction
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if last, err = p.Predict(history(30, 500)); err != nil {
			t.Fatalf("after the restart: %v", err)
		}
		if last.Source == inference.SourceRemote {
			break
		}
	}
	if last.Source != inference.SourceRemote {
		t.Fatalf("the service never answered again after its restart: %+v", last)
	}
	if n := metrics.Answers("PredictBandwidth", inference.SourceRemote); n != 2 {
		t.Fatalf("remote answers %v, want 2", n)
	}
	if got := testutil.CollectAndCount(metrics, "dwcp_client_errors_total", "dwcp_client_unanswered_total"); got != 0 {
		t.Fatalf("%d error or unanswered series: no call failed", got)
	}
}
