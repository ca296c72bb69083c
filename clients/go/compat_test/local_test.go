package compat_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/monitoring"
	"github.com/dwcp/inference/clients/go/prediction"
)

// This test binary imports no local runtime (no embedded package): a model path on disk, which DWCP's code
// passes to run the model in-process, is refused with a message naming the import, never ignored.
func TestModelPathWithoutALocalRuntimeSaysWhatToImport(t *testing.T) {
	if inference.LocalRegistered() {
		t.Fatal("a local runtime is registered in a binary that imports none")
	}
	dir := filepath.Join(t.TempDir(), "bandwidth_predictor", "1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.onnx", "metadata.json"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := prediction.NewLSTMPredictor(filepath.Join(dir, "model.onnx"))
	if !errors.Is(err, inference.ErrNoLocalRuntime) {
		t.Fatalf("prediction: %v", err)
	}
	if _, err := monitoring.NewIsolationForestModel(dir, nil); !errors.Is(err, inference.ErrNoLocalRuntime) {
		t.Fatalf("monitoring: %v", err)
	}
	loc, err := inference.LocateModel(filepath.Join(dir, "model.onnx"))
	if err != nil || loc.Model != "bandwidth_predictor" || loc.Version != "1" || loc.Repository != filepath.Dir(filepath.Dir(dir)) {
		t.Fatalf("LocateModel: %+v %v", loc, err)
	}
}
