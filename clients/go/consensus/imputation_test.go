package consensus_test

import (
	"context"
	"encoding/json"
	"testing"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/consensus"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/modelsync"
)

// A cluster that does not measure p95 and p99 latency: the detector sends the served version's imputation
// values for them, so its verdict is the one a detector given those values explicitly reaches, and the anomaly
// says which fields were imputed, with what and how.
func TestUnmeasuredStateIsSentAsTheServedVersionsImputation(t *testing.T) {
	target := servertest.Target(t)
	conn, err := inference.Dial(inference.WithTarget(target))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ref, raw, err := modelsync.FetchMetadata(context.Background(), conn, "consensus_latency", nil)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Imputation map[string]consensus.ImputedField `json:"imputation"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil || meta.Imputation["latency_p99_ms"].Value <= 0 {
		t.Fatalf("the served version has no imputation for latency_p99_ms (%v): run make imputation", err)
	}

	unmeasured := normalState
	unmeasured.LatencyP95Ms, unmeasured.LatencyP99Ms = 0, 0
	unmeasured.QueueDepth, unmeasured.ProposalsPending = 60, 40
	explicit := unmeasured
	explicit.LatencyP95Ms, explicit.LatencyP99Ms = meta.Imputation["latency_p95_ms"].Value,
		meta.Imputation["latency_p99_ms"].Value
	verdicts := map[string]*consensus.Anomaly{}
	for name, state := range map[string]consensus.ConsensusState{"unmeasured": unmeasured, "explicit": explicit} {
		ad := consensus.NewAnomalyDetector(nil, zap.NewNop(), consensus.WithTarget(target))
		defer ad.Close()
		ad.UpdateConsensusState(state)
		for i := 0; i < consensus.Window; i++ {
			if a := ad.CheckConsensusLatency(900); a != nil {
				verdicts[name] = a
			}
		}
		if src, err := ad.LastSource(); src != inference.SourceRemote || err != nil {
			t.Fatalf("%s judged by %q: %v", name, src, err)
		}
	}
	got, want := verdicts["unmeasured"], verdicts["explicit"]
	if got == nil || want == nil || got.Description != want.Description {
		t.Fatalf("imputed: %+v\nexplicit: %+v", got, want)
	}
	if len(got.Imputation) != 2 || len(want.Imputation) != 0 {
		t.Fatalf("imputation listed: %+v (explicit: %+v)", got.Imputation, want.Imputation)
	}
	for _, f := range got.Imputation {
		w := meta.Imputation[f.Field]
		if f.Value != w.Value || f.How != w.How || f.How == consensus.NoMetadata || f.Version != ref.GetVersion() {
			t.Fatalf("%s imputed as %+v, version %s's metadata says %+v", f.Field, f, ref.GetVersion(), w)
		}
	}
}
