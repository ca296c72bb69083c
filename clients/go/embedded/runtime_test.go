package embedded

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// call answers any of the eight inference requests with r.
func call(ctx context.Context, r *Runtime, req proto.Message) (proto.Message, error) {
	switch q := req.(type) {
	case *pb.PredictBandwidthRequest:
		return r.PredictBandwidth(ctx, q)
	case *pb.PredictBandwidthBatchRequest:
		return r.PredictBandwidthBatch(ctx, q)
	case *pb.SelectCompressionRequest:
		return r.SelectCompression(ctx, q)
	case *pb.SelectCompressionBatchRequest:
		return r.SelectCompressionBatch(ctx, q)
	case *pb.DetectAnomalyRequest:
		return r.DetectAnomaly(ctx, q)
	case *pb.DetectAnomalyBatchRequest:
		return r.DetectAnomalyBatch(ctx, q)
	case *pb.DetectHighLatencyRequest:
		return r.DetectHighLatency(ctx, q)
	case *pb.DetectHighLatencyBatchRequest:
		return r.DetectHighLatencyBatch(ctx, q)
	}
	panic("not an inference request")
}

func modelOf(resp proto.Message) *pb.ModelRef {
	return resp.ProtoReflect().Get(resp.ProtoReflect().Descriptor().Fields().ByName("model")).Message().Interface().(*pb.ModelRef)
}

// Without a server: every bundled version loads and verifies, and answers its test vectors as the vectors say.
func TestServesTheBundledVersionsAndTheirTestVectors(t *testing.T) {
	r := open(t, bundledRepo(t))
	st := r.Status()
	if len(st.Refused) != 0 || len(st.Models) != 4 {
		t.Fatalf("status %+v: expected the four bundled models loaded and nothing refused", st)
	}
	ctx := context.Background()
	for _, m := range st.Models {
		if len(m.Loaded) != 1 || m.Default != "1" {
			t.Fatalf("%s: loaded %v, default %q", m.Name, m.Loaded, m.Default)
		}
		meta, err := readMetadata(filepath.Join(bundledRepo(t), m.Name, "1"))
		if err != nil {
			t.Fatal(err)
		}
		for i, vec := range meta.TestVectors {
			resp, err := call(ctx, r, vectorRequest(t, m.Name, vec))
			if err != nil {
				t.Fatalf("%s vector %d: %v", m.Name, i, err)
			}
			if ref := modelOf(resp); ref.GetName() != m.Name || ref.GetVersion() != "1" {
				t.Fatalf("%s vector %d: model %v", m.Name, i, ref)
			}
			var want []float64
			switch resp := resp.(type) {
			case *pb.DetectAnomalyResponse: // the raw values are sent as they are: the score is the vector's
				decodeFlat(vec.Outputs["probabilities"], &want)
				if got := resp.GetVerdict().GetScore(); math.Abs(got-want[1]) > 1e-4*(1+math.Abs(want[1])) {
					t.Fatalf("vector %d: score %v, the vector says %v", i, got, want[1])
				}
			case *pb.DetectHighLatencyResponse:
				decodeFlat(vec.Outputs["score"], &want)
				if got := resp.GetVerdict().GetReconstructionError(); math.Abs(got-want[0]) > 1e-4*(1+want[0]) {
					t.Fatalf("vector %d: error %v, the vector says %v", i, got, want[0])
				}
			case *pb.SelectCompressionResponse: // the size is rounded to whole bytes: the choice stays
				decodeFlat(vec.Outputs["probabilities"], &want)
				best := 0
				for k := range want {
					if want[k] > want[best] {
						best = k
					}
				}
				choices := meta.decisionChoices(t)
				if c := resp.GetDecision().GetChoice(); c.GetCodec() != codecs[choices[best].Codec] ||
					c.GetLevel() != choices[best].Level {
					t.Fatalf("vector %d: choice %v, the vector's most probable is %v", i, c, choices[best])
				}
			case *pb.PredictBandwidthResponse:
				p := resp.GetPrediction()
				if !(p.GetPredictedBandwidthMbps() > 0) || p.GetConfidence() < 0 || p.GetConfidence() > 1 ||
					p.GetPredictionId() != "" {
					t.Fatalf("vector %d: prediction %v", i, p)
				}
			}
		}
	}
}

type choice struct {
	Codec string `json:"codec"`
	Level int32  `json:"level"`
}

func (m *metadata) decisionChoices(t *testing.T) []choice {
	var d struct {
		Choices []choice `json:"choices"`
	}
	if err := json.Unmarshal(m.Decision, &d); err != nil {
		t.Fatal(err)
	}
	return d.Choices
}

func editMetadata(t testing.TB, dir string, edit func(map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, metadataFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if data, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func refusalOf(st Status, model, ver string) string {
	for _, r := range st.Refused {
		if r.Model == model && r.Version == ver {
			return r.Reason
		}
	}
	return ""
}

// A tampered model.onnx (its sha256 no longer the metadata's) and a version without the feature graph are
// refused with their reasons; the versions that verify serve.
func TestRefusesATamperedModelAndAVersionWithoutTheFeatureGraph(t *testing.T) {
	repo := copyRepo(t, CompressionModel, AnomalyModel)
	sel := filepath.Join(repo, CompressionModel)
	copyDir(t, filepath.Join(sel, "1"), filepath.Join(sel, "2"))
	editMetadata(t, filepath.Join(sel, "2"), func(m map[string]any) {
		m["version"] = "2"
		m["features_in_graph"] = false
	})
	f, err := os.OpenFile(filepath.Join(repo, AnomalyModel, "1", modelFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0})
	f.Close()
	var events []Event
	r := open(t, repo, WithEventHandler(func(e Event) { events = append(events, e) }))
	st := r.Status()
	if reason := refusalOf(st, CompressionModel, "2"); !strings.Contains(reason, "no feature graph") ||
		!strings.Contains(reason, "the server serves it") {
		t.Fatalf("version without the feature graph: refusal %q", reason)
	}
	if reason := refusalOf(st, AnomalyModel, "1"); !strings.Contains(reason, "sha256 of model.onnx") {
		t.Fatalf("tampered model: refusal %q", reason)
	}
	if len(events) != 3 { // selector 2 refused, selector 1 loaded, detector 1 refused
		t.Fatalf("events %v", events)
	}
	_, err = r.DetectAnomaly(context.Background(), &pb.DetectAnomalyRequest{Metrics: &pb.NodeMetrics{}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a model with no valid version: %v, expected Unavailable", err)
	}
	resp, err := r.SelectCompression(context.Background(), &pb.SelectCompressionRequest{
		Link:    &pb.LinkState{ThroughputMbps: 100, RttMs: 40, LinkType: pb.LinkType_LINK_TYPE_WAN},
		Payload: &pb.PayloadTraits{SizeBytes: 1 << 20, Sample: []byte(strings.Repeat("dwcp ", 800))}})
	if err != nil || resp.GetModel().GetVersion() != "1" {
		t.Fatalf("the verified version answers: %v %v", resp, err)
	}
}

// Bad input is refused with InvalidArgument naming the field as the caller sent it; the runtime keeps answering.
func TestInvalidRequestsNameTheField(t *testing.T) {
	r := open(t, bundledRepo(t))
	ctx := context.Background()
	history := func(n int) *pb.LinkHistory {
		h := &pb.LinkHistory{}
		for i := 0; i < n; i++ {
			h.Samples = append(h.Samples, &pb.NetworkSample{BandwidthMbps: 500, LatencyMs: 20, PacketLoss: 0.001,
				JitterMs: 2, TimeOfDay: 14, DayOfWeek: 2})
		}
		return h
	}
	bad := history(30)
	bad.Samples[12].BandwidthMbps = -5
	nan := history(24)
	nan.Samples[3].JitterMs = math.NaN()
	window := &pb.ConsensusWindow{}
	for i := 0; i < 20; i++ {
		window.Samples = append(window.Samples, &pb.ConsensusSample{QueueDepth: 5, ProposalsCommitted: 200,
			QuorumSize: 3, ActiveNodes: 5, NetworkTier: "tier2", DwcpMode: "datacenter", ConsensusType: "raft"})
	}
	window.Samples[7].DwcpMode = "lan"
	link := &pb.LinkState{ThroughputMbps: 100, RttMs: 40, LinkType: pb.LinkType_LINK_TYPE_WAN}
	cases := []struct {
		req  proto.Message
		want string
	}{
		{&pb.PredictBandwidthRequest{History: bad}, "history.samples[12].bandwidth_mbps: expected >= 0, got -5"},
		{&pb.PredictBandwidthRequest{History: nan}, "history.samples[3].jitter_ms: expected a finite number, got nan"},
		{&pb.PredictBandwidthRequest{History: history(5)},
			"history.samples: expected at least 24 samples (the model's window), got 5"},
		{&pb.PredictBandwidthBatchRequest{Histories: []*pb.LinkHistory{history(24), bad}},
			"histories[1].samples[12].bandwidth_mbps: expected >= 0, got -5"},
		{&pb.PredictBandwidthBatchRequest{}, "histories: expected at least one item, got none"},
		{&pb.SelectCompressionRequest{Link: &pb.LinkState{}, Payload: &pb.PayloadTraits{Sample: []byte("x")}},
			"link.link_type: expected one of ['LINK_TYPE_DC', 'LINK_TYPE_METRO', 'LINK_TYPE_WAN', 'LINK_TYPE_EDGE'], got LINK_TYPE_UNSPECIFIED"},
		{&pb.SelectCompressionRequest{Link: link, Payload: &pb.PayloadTraits{SizeBytes: 10}},
			"payload: expected a sample, or both entropy_bits_per_byte and recent_compression_ratio"},
		{&pb.SelectCompressionBatchRequest{Queries: []*pb.CompressionQuery{{Link: link, Payload: &pb.PayloadTraits{
			SizeBytes: 0, Sample: []byte("abc")}}}}, "queries[0].payload.size_bytes: expected >= 1, got 0"},
		{&pb.DetectAnomalyRequest{}, "metrics: expected the node's metric vector, got none"},
		{&pb.DetectAnomalyRequest{Metrics: &pb.NodeMetrics{CpuUsage: 1.5}}, "metrics.cpu_usage: expected <= 1, got 1.5"},
		{&pb.DetectHighLatencyRequest{Window: window},
			"window.samples[7].dwcp_mode: unknown value 'lan', expected one of ['datacenter', 'internet', 'hybrid']"},
	}
	for _, c := range cases {
		_, err := call(ctx, r, c.req)
		if s, _ := status.FromError(err); s.Code() != codes.InvalidArgument || s.Message() != c.want {
			t.Errorf("%T: got %v, expected InvalidArgument %q", c.req, err, c.want)
		}
	}
	if _, err := r.PredictBandwidth(ctx, &pb.PredictBandwidthRequest{History: history(24)}); err != nil {
		t.Fatalf("a valid request after the bad ones: %v", err)
	}
}

// A version whose outputs are not finite at the ends of its declared ranges is refused (the edge probe).
func TestRefusesAVersionNonFiniteAtTheEdgesOfItsRanges(t *testing.T) {
	repo := copyRepo(t, CompressionModel)
	editMetadata(t, filepath.Join(repo, CompressionModel, "1"), func(m map[string]any) {
		for _, f := range m["raw_fields"].([]any) {
			if f := f.(map[string]any); f["name"] == "payload_entropy" {
				f["max"] = 1e300 // float32 overflow inside the graph
			}
		}
	})
	r := open(t, repo)
	if reason := refusalOf(r.Status(), CompressionModel, "1"); !strings.Contains(reason, "edge probe: non-finite") {
		t.Fatalf("refusal %q", reason)
	}
}
