package monitoring_test

import (
	"context"
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/modelsync"
	"github.com/dwcp/inference/clients/go/monitoring"
)

// servedImputation reads the imputation section of the server's default reliability_detector version.
func servedImputation(t *testing.T, target string) (string, map[string]monitoring.ImputedField) {
	t.Helper()
	conn, err := inference.Dial(inference.WithTarget(target))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ref, raw, err := modelsync.FetchMetadata(context.Background(), conn, "reliability_detector", nil)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Imputation map[string]monitoring.ImputedField `json:"imputation"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil || len(meta.Imputation) == 0 {
		t.Fatalf("the served version's metadata has no imputation section (%v): run make imputation", err)
	}
	return ref.GetVersion(), meta.Imputation
}

func contribution(t *testing.T, a *monitoring.Anomaly, field string) *pb.FeatureContribution {
	t.Helper()
	all, _ := a.Context["contributions"].([]*pb.FeatureContribution)
	for _, c := range all {
		if c.GetFeature() == field {
			return c
		}
	}
	t.Fatalf("no contribution of %s in %v", field, a.Context["contributions"])
	return nil
}

func sameContributions(a, b *monitoring.Anomaly) bool {
	x, _ := a.Context["contributions"].([]*pb.FeatureContribution)
	y, _ := b.Context["contributions"].([]*pb.FeatureContribution)
	if len(x) == 0 || len(x) != len(y) {
		return false
	}
	for i := range x {
		if !proto.Equal(x[i], y[i]) {
			return false
		}
	}
	return true
}

// A MetricVector has no p99 latency: Detect sends the served version's imputation value (the median of its
// training data's normal rows), not 0, so the verdict is the one a request carrying that value explicitly gets,
// and the answer says which fields were imputed, with what and how.
func TestUnmeasuredFieldsAreSentAsTheServedVersionsImputation(t *testing.T) {
	target := servertest.Target(t)
	version, want := servedImputation(t, target)
	client, err := inference.New(inference.WithTarget(target))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	d := monitoring.NewInferenceDetector(client)
	defer d.Close()
	ctx := context.Background()
	m := &monitoring.MetricVector{Latency: 18.9, PacketLoss: 0.0012, CPUUsage: 0.4, MemoryUsage: 0.45, ErrorRate: 0.05}
	got, err := d.Detect(ctx, m)
	if err != nil || got == nil {
		t.Fatalf("error rate 5%% not flagged: %v, %v", got, err)
	}

	imputed, ok := got.Context["imputed"].([]monitoring.ImputedField)
	if !ok || len(imputed) != 5 {
		t.Fatalf("the answer does not list the imputed fields: %#v", got.Context["imputed"])
	}
	explicit := &pb.NodeMetrics{ErrorRate: m.ErrorRate, LatencyP50Ms: m.Latency, PacketLossRate: m.PacketLoss,
		CpuUsage: m.CPUUsage, MemoryUsage: m.MemoryUsage}
	zeros := proto.Clone(explicit).(*pb.NodeMetrics)
	for _, f := range imputed {
		w := want[f.Field]
		if f.Value != w.Value || f.How != w.How || f.How == monitoring.NoMetadata || f.Version != version {
			t.Fatalf("%s imputed as %+v, the served version %s's metadata says %+v", f.Field, f, version, w)
		}
	}
	explicit.TimeoutRate, explicit.LatencyP99Ms, explicit.SlaViolations = want["timeout_rate"].Value,
		want["latency_p99_ms"].Value, want["sla_violations"].Value
	explicit.ConnectionFailures, explicit.DiskIoMbps = want["connection_failures"].Value, want["disk_io_mbps"].Value
	if want["latency_p99_ms"].Value < 30 {
		t.Fatalf("latency_p99_ms imputed as %v: not the normal rows' median", want["latency_p99_ms"].Value)
	}

	same, err := d.DetectNode(ctx, explicit)
	if err != nil || same == nil {
		t.Fatalf("%v, %v", same, err)
	}
	if got.Context["score"] != same.Context["score"] || !sameContributions(got, same) {
		t.Fatalf("imputed: score %v, contributions %v\nexplicit: score %v, contributions %v", got.Context["score"],
			got.Context["contributions"], same.Context["score"], same.Context["contributions"])
	}
	// What 0 would have said: a p99 latency over 3 standard deviations below normal.
	zero, err := d.DetectNode(ctx, zeros)
	if err != nil || zero == nil {
		t.Fatalf("%v, %v", zero, err)
	}
	if dev := contribution(t, zero, "latency_p99_ms").GetDeviation(); dev > -3 {
		t.Fatalf("p99 0 is %v sd from normal; the test needs 0 to be far out", dev)
	}
}
