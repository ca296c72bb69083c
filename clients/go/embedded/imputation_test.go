package embedded

import (
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/monitoring"
)

// editImputation rewrites the reliability_detector version 1 metadata's imputation section in repo (nil: removes
// it, as in a version exported before the section). Only metadata.json changes: the version still verifies.
func editImputation(t *testing.T, repo string, section map[string]any) {
	t.Helper()
	editMetadata(t, filepath.Join(repo, AnomalyModel, "1"), func(meta map[string]any) {
		if section == nil {
			delete(meta, "imputation")
		} else {
			meta["imputation"] = section
		}
	})
}

// A detector running the model in-process sends what its loaded version's metadata says for the fields a
// MetricVector lacks, and says so; with a version exported before the section it sends 0 and says that.
func TestInProcessDetectorImputesFromItsVersionsMetadata(t *testing.T) {
	t.Setenv("DWCP_INFERENCE_TARGET", "")
	with := copyRepo(t, AnomalyModel)
	editImputation(t, with, map[string]any{"latency_p99_ms": map[string]any{"value": 42.5, "how": "set by the test"}})
	without := copyRepo(t, AnomalyModel)
	editImputation(t, without, nil)

	m := &monitoring.MetricVector{Latency: 18.9, PacketLoss: 0.0012, CPUUsage: 0.4, MemoryUsage: 0.45, ErrorRate: 0.05}
	for repo, want := range map[string]monitoring.ImputedField{
		with:    {Field: "latency_p99_ms", Value: 42.5, How: "set by the test", Version: "1"},
		without: {Field: "latency_p99_ms", How: monitoring.NoMetadata},
	} {
		rt := open(t, repo)
		entries := 0
		if repo == with {
			entries = 1
		}
		if v, table, err := rt.Imputation(AnomalyModel, ""); err != nil || v != "1" || len(table) != entries {
			t.Fatalf("%s: Imputation gives %s %v %v", repo, v, table, err)
		}
		rt.Close()
		d, err := monitoring.NewIsolationForestModel(filepath.Join(repo, AnomalyModel), zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		a, err := d.Detect(context.Background(), m)
		d.Close()
		if err != nil || a == nil || a.Context["source"] != inference.SourceEmbedded {
			t.Fatalf("%v, %+v", err, a)
		}
		imputed, _ := a.Context["imputed"].([]monitoring.ImputedField)
		if len(imputed) != 5 || imputed[1] != want {
			t.Fatalf("imputed %+v, want latency_p99_ms %+v", imputed, want)
		}
	}
}
