package inference_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// repoRuntime records the selectors of the calls it gets.
type repoRuntime struct {
	inference.UnimplementedAnswerer
	repo string
	got  []*pb.ModelSelector
}

func (r *repoRuntime) PredictBandwidth(_ context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	r.got = append(r.got, req.GetModel())
	return &pb.PredictBandwidthResponse{}, nil
}

func (r *repoRuntime) SelectCompression(_ context.Context, req *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
	r.got = append(r.got, req.GetModel())
	return &pb.SelectCompressionResponse{}, nil
}

func (r *repoRuntime) Close() error { return nil }

func TestRepositoryOpenerPinsTheVersionAPathNames(t *testing.T) {
	repo := t.TempDir()
	version := filepath.Join(repo, "bandwidth_predictor", "7")
	if err := os.MkdirAll(version, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.onnx", "metadata.json"} {
		if err := os.WriteFile(filepath.Join(version, f), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var rt *repoRuntime
	open := inference.RepositoryOpener(func(r string, _ inference.LocalConfig) (inference.LocalRuntime, error) {
		rt = &repoRuntime{repo: r}
		return rt, nil
	})
	for _, path := range []string{repo, filepath.Dir(version), version, filepath.Join(version, "model.onnx")} {
		if _, err := open(path, inference.LocalConfig{}); err != nil || rt.repo != repo {
			t.Fatalf("%s opened repository %q: %v", path, rt.repo, err)
		}
	}
	local, _ := open(filepath.Join(version, "model.onnx"), inference.LocalConfig{})
	shared := &pb.PredictBandwidthRequest{}
	local.PredictBandwidth(t.Context(), shared)
	local.PredictBandwidth(t.Context(), &pb.PredictBandwidthRequest{Model: &pb.ModelSelector{Label: "canary"}})
	local.SelectCompression(t.Context(), &pb.SelectCompressionRequest{})
	if shared.Model != nil {
		t.Fatal("the caller's request was written")
	}
	if len(rt.got) != 3 || rt.got[0].GetVersion() != "7" || rt.got[1].GetLabel() != "canary" ||
		rt.got[1].GetVersion() != "" || rt.got[2] != nil {
		t.Fatalf("selectors sent: %v", rt.got)
	}
	if _, err := open(filepath.Join(repo, "missing"), inference.LocalConfig{}); err == nil {
		t.Fatal("a missing path was opened")
	}
}

// allRuntime records the selector of every call, whichever RPC it is.
type allRuntime struct {
	inference.UnimplementedAnswerer
	got map[string]*pb.ModelSelector
}

func (r *allRuntime) PredictBandwidth(_ context.Context, q *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	r.got["PredictBandwidth"] = q.GetModel()
	return nil, nil
}
func (r *allRuntime) PredictBandwidthBatch(_ context.Context, q *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, error) {
	r.got["PredictBandwidthBatch"] = q.GetModel()
	return nil, nil
}
func (r *allRuntime) SelectCompression(_ context.Context, q *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
	r.got["SelectCompression"] = q.GetModel()
	return nil, nil
}
func (r *allRuntime) SelectCompressionBatch(_ context.Context, q *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, error) {
	r.got["SelectCompressionBatch"] = q.GetModel()
	return nil, nil
}
func (r *allRuntime) DetectAnomaly(_ context.Context, q *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	r.got["DetectAnomaly"] = q.GetModel()
	return nil, nil
}
func (r *allRuntime) DetectAnomalyBatch(_ context.Context, q *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, error) {
	r.got["DetectAnomalyBatch"] = q.GetModel()
	return nil, nil
}
func (r *allRuntime) DetectHighLatency(_ context.Context, q *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error) {
	r.got["DetectHighLatency"] = q.GetModel()
	return nil, nil
}
func (r *allRuntime) DetectHighLatencyBatch(_ context.Context, q *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, error) {
	r.got["DetectHighLatencyBatch"] = q.GetModel()
	return nil, nil
}
func (r *allRuntime) Close() error { return nil }

// Every RPC of the model a version path names is pinned to that version; the other models' RPCs are not.
func TestAVersionPathPinsEveryRPCOfItsModelOnly(t *testing.T) {
	rpcs := map[string][2]string{ // model -> its single and batch RPC
		"bandwidth_predictor":  {"PredictBandwidth", "PredictBandwidthBatch"},
		"compression_selector": {"SelectCompression", "SelectCompressionBatch"},
		"reliability_detector": {"DetectAnomaly", "DetectAnomalyBatch"},
		"consensus_latency":    {"DetectHighLatency", "DetectHighLatencyBatch"},
	}
	for model := range rpcs {
		version := filepath.Join(t.TempDir(), model, "7")
		if err := os.MkdirAll(version, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"model.onnx", "metadata.json"} {
			if err := os.WriteFile(filepath.Join(version, f), []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		rt := &allRuntime{got: map[string]*pb.ModelSelector{}}
		local, err := inference.RepositoryOpener(func(string, inference.LocalConfig) (inference.LocalRuntime, error) {
			return rt, nil
		})(version, inference.LocalConfig{})
		if err != nil {
			t.Fatal(err)
		}
		ctx := t.Context()
		local.PredictBandwidth(ctx, &pb.PredictBandwidthRequest{})
		local.PredictBandwidthBatch(ctx, &pb.PredictBandwidthBatchRequest{})
		local.SelectCompression(ctx, &pb.SelectCompressionRequest{})
		local.SelectCompressionBatch(ctx, &pb.SelectCompressionBatchRequest{})
		local.DetectAnomaly(ctx, &pb.DetectAnomalyRequest{})
		local.DetectAnomalyBatch(ctx, &pb.DetectAnomalyBatchRequest{})
		local.DetectHighLatency(ctx, &pb.DetectHighLatencyRequest{})
		local.DetectHighLatencyBatch(ctx, &pb.DetectHighLatencyBatchRequest{})
		if len(rt.got) != 8 {
			t.Fatalf("%s: %d of 8 RPCs reached the runtime", model, len(rt.got))
		}
		for other, names := range rpcs {
			for _, name := range names {
				sel := rt.got[name]
				if pinned := sel.GetVersion() == "7"; pinned != (other == model) {
					t.Errorf("%s pinned by a %s path: selector %v", name, model, sel)
				}
			}
		}
	}
}

// Drop-ins share a sync's connection only when they would dial the same one: same target, the same TLS
// configuration, same keepalive; call settings (timeout, retries) do not matter, raw dial options are never shared.
func TestConnKeyTellsWhichConnectionsAreTheSame(t *testing.T) {
	cfg := &tls.Config{}
	plain := inference.ConnKey(inference.WithTarget("a:1"))
	same := []any{inference.ConnKey(inference.WithTarget("a:1"), inference.WithTimeout(time.Second),
		inference.WithRetries(5, time.Millisecond))}
	differ := []any{inference.ConnKey(inference.WithTarget("b:1")),
		inference.ConnKey(inference.WithTarget("a:1"), inference.WithTLS(cfg)),
		inference.ConnKey(inference.WithTarget("a:1"), inference.WithKeepalive(time.Second))}
	for _, k := range same {
		if k != plain {
			t.Errorf("%v differs from %v", k, plain)
		}
	}
	for _, k := range differ {
		if k == plain {
			t.Errorf("%v is the same as %v", k, plain)
		}
	}
	if inference.ConnKey(inference.WithTarget("a:1"), inference.WithTLS(cfg)) !=
		inference.ConnKey(inference.WithTarget("a:1"), inference.WithTLS(cfg)) {
		t.Error("the same TLS configuration makes different keys")
	}
	if k := inference.ConnKey(inference.WithTarget("a:1"), inference.WithDialOptions(grpc.WithUserAgent("x"))); k != nil {
		t.Errorf("raw dial options made a key: %v", k)
	}
}
