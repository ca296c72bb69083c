package embedded

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

var selectRequest = &pb.SelectCompressionRequest{
	Link:    &pb.LinkState{ThroughputMbps: 100, RttMs: 40, LinkType: pb.LinkType_LINK_TYPE_WAN},
	Payload: &pb.PayloadTraits{SizeBytes: 1 << 20, EntropyBitsPerByte: ptr(5.0), RecentCompressionRatio: ptr(0.5)}}

// A version's model.onnx, a version directory or a model directory open that model alone; the other models are
// inference.ErrNotLoaded (UNAVAILABLE), so a drop-in's chain asks its next source. The package registers itself
// as the drop-ins' local runtime.
func TestOpensAModelVersionOrModelDirectory(t *testing.T) {
	needLibrary(t)
	repo := bundledRepo(t)
	for _, path := range []string{filepath.Join(repo, CompressionModel, "1", modelFile),
		filepath.Join(repo, CompressionModel, "1"), filepath.Join(repo, CompressionModel)} {
		rt, err := inference.OpenLocal(path, inference.LocalConfig{})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp, err := rt.SelectCompression(context.Background(), selectRequest)
		if err != nil || resp.GetModel().GetVersion() != "1" {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		_, err = rt.DetectAnomaly(context.Background(), &pb.DetectAnomalyRequest{Metrics: &pb.NodeMetrics{}})
		if !errors.Is(err, inference.ErrNotLoaded) || status.Code(err) != codes.Unavailable {
			t.Fatalf("%s: a model it does not hold: %v, expected ErrNotLoaded and UNAVAILABLE", path, err)
		}
		rt.Close()
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a path that does not exist opened")
	}
}

// With a state directory the policy is read from there first, as the server's --state-dir.
func TestReadsThePolicyFromTheStateDirectory(t *testing.T) {
	repo := copyRepo(t, CompressionModel)
	publish(t, repo, CompressionModel, "2", nil)
	state := t.TempDir()
	os.MkdirAll(filepath.Join(state, CompressionModel), 0o755)
	os.WriteFile(filepath.Join(state, CompressionModel, policyFile), []byte(`{"labels": {"stable": "1"}}`), 0o644)
	for _, c := range []struct {
		opts []Option
		want string
	}{{nil, "2"}, {[]Option{WithStateDir(state)}, "1"}} {
		r := open(t, repo, c.opts...)
		resp, err := r.SelectCompression(context.Background(), selectRequest)
		if err != nil || resp.GetModel().GetVersion() != c.want {
			t.Fatalf("options %v: %v %v, expected version %s", c.opts, resp.GetModel(), err, c.want)
		}
		pinned, err := r.SelectCompression(context.Background(), &pb.SelectCompressionRequest{Link: selectRequest.Link,
			Payload: selectRequest.Payload, Model: &pb.ModelSelector{Version: "2"}})
		if err != nil || pinned.GetModel().GetVersion() != "2" {
			t.Fatalf("a pinned version: %v %v", pinned.GetModel(), err)
		}
	}
}

// A call whose context is done is not computed; after Close every call is UNAVAILABLE.
func TestCanceledCallsAndCallsAfterClose(t *testing.T) {
	needLibrary(t)
	r, err := Open(bundledRepo(t), WithPollInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.SelectCompression(ctx, selectRequest); status.Code(err) != codes.Canceled {
		t.Fatalf("a canceled call: %v", err)
	}
	r.Close()
	if _, err := r.SelectCompression(context.Background(), selectRequest); status.Code(err) != codes.Unavailable {
		t.Fatalf("a call after Close: %v", err)
	}
}
