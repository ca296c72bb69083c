package inference_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

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
