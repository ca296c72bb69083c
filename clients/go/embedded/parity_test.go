package embedded

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

func TestMain(m *testing.M) { servertest.Main(m) }

// remote answers a request with the server.
func remote(ctx context.Context, c pb.InferenceServiceClient, req proto.Message) (proto.Message, error) {
	switch q := req.(type) {
	case *pb.PredictBandwidthRequest:
		return c.PredictBandwidth(ctx, q)
	case *pb.PredictBandwidthBatchRequest:
		return c.PredictBandwidthBatch(ctx, q)
	case *pb.SelectCompressionRequest:
		return c.SelectCompression(ctx, q)
	case *pb.SelectCompressionBatchRequest:
		return c.SelectCompressionBatch(ctx, q)
	case *pb.DetectAnomalyRequest:
		return c.DetectAnomaly(ctx, q)
	case *pb.DetectAnomalyBatchRequest:
		return c.DetectAnomalyBatch(ctx, q)
	case *pb.DetectHighLatencyRequest:
		return c.DetectHighLatency(ctx, q)
	case *pb.DetectHighLatencyBatchRequest:
		return c.DetectHighLatencyBatch(ctx, q)
	}
	panic("not an inference request")
}

// differences lists where two answers differ: numbers by more than 1e-5, anything else at all. Prediction ids
// (the server signs them; embedded answers have none) and the times taken from the clock are not compared.
func differences(path string, a, b protoreflect.Message) []string {
	var out []string
	fields := a.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		f := fields.Get(i)
		name := path + "." + string(f.Name())
		switch f.Name() {
		case "prediction_id", "prediction_time":
			continue
		case "valid_until": // from the last sample's time (all generated histories have one) plus the horizon
			if !a.Has(f) && !b.Has(f) {
				continue
			}
		}
		if f.IsList() {
			la, lb := a.Get(f).List(), b.Get(f).List()
			if la.Len() != lb.Len() {
				out = append(out, fmt.Sprintf("%s: %d items vs %d", name, la.Len(), lb.Len()))
				continue
			}
			for k := 0; k < la.Len(); k++ {
				out = append(out, differ(fmt.Sprintf("%s[%d]", name, k), f, la.Get(k), lb.Get(k))...)
			}
			continue
		}
		if a.Has(f) != b.Has(f) {
			out = append(out, fmt.Sprintf("%s: set %v vs %v", name, a.Has(f), b.Has(f)))
			continue
		}
		out = append(out, differ(name, f, a.Get(f), b.Get(f))...)
	}
	return out
}

func differ(name string, f protoreflect.FieldDescriptor, x, y protoreflect.Value) []string {
	switch f.Kind() {
	case protoreflect.MessageKind:
		return differences(name, x.Message(), y.Message())
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		if d := math.Abs(x.Float() - y.Float()); !(d <= 1e-5) {
			return []string{fmt.Sprintf("%s: %v vs %v", name, x.Float(), y.Float())}
		}
		return nil
	}
	if !x.Equal(y) {
		return []string{fmt.Sprintf("%s: %v vs %v", name, x.Interface(), y.Interface())}
	}
	return nil
}

// parityRequests are every bundled version's test vectors as typed requests, random valid requests (windows,
// 4 KiB payload samples, batch forms) and a few invalid ones.
func parityRequests(t *testing.T) []proto.Message {
	rng := rand.New(rand.NewPCG(20, 26))
	var reqs []proto.Message
	for _, model := range Models {
		meta, err := readMetadata(filepath.Join(bundledRepo(t), model, "1"))
		if err != nil {
			t.Fatal(err)
		}
		for _, vec := range meta.TestVectors {
			reqs = append(reqs, vectorRequest(t, model, vec))
		}
		var singles []proto.Message
		for i := 0; i < 60; i++ {
			singles = append(singles, randomRequest(rng, model, meta))
		}
		reqs = append(reqs, singles...)
		for start := 0; start < len(singles); start += 15 { // the same requests in batches of 15
			reqs = append(reqs, batchOf(singles[start:start+15]))
		}
	}
	reqs = append(reqs, &pb.DetectAnomalyRequest{Metrics: &pb.NodeMetrics{}, Model: &pb.ModelSelector{Label: "latest"}},
		&pb.SelectCompressionRequest{Link: &pb.LinkState{LinkType: 2}, Payload: &pb.PayloadTraits{SizeBytes: 1,
			Sample: []byte{0}}, Model: &pb.ModelSelector{Version: "1"}})
	reqs = append(reqs, invalidRequests()...)
	return reqs
}

func batchOf(singles []proto.Message) proto.Message {
	switch singles[0].(type) {
	case *pb.PredictBandwidthRequest:
		b := &pb.PredictBandwidthBatchRequest{}
		for _, s := range singles {
			b.Histories = append(b.Histories, s.(*pb.PredictBandwidthRequest).GetHistory())
		}
		return b
	case *pb.SelectCompressionRequest:
		b := &pb.SelectCompressionBatchRequest{}
		for _, s := range singles {
			q := s.(*pb.SelectCompressionRequest)
			b.Queries = append(b.Queries, &pb.CompressionQuery{Link: q.GetLink(), Payload: q.GetPayload()})
		}
		return b
	case *pb.DetectAnomalyRequest:
		b := &pb.DetectAnomalyBatchRequest{}
		for _, s := range singles {
			b.Metrics = append(b.Metrics, s.(*pb.DetectAnomalyRequest).GetMetrics())
		}
		return b
	}
	b := &pb.DetectHighLatencyBatchRequest{}
	for _, s := range singles {
		b.Windows = append(b.Windows, s.(*pb.DetectHighLatencyRequest).GetWindow())
	}
	return b
}

func invalidRequests() []proto.Message {
	h := &pb.LinkHistory{}
	for i := 0; i < 26; i++ {
		h.Samples = append(h.Samples, &pb.NetworkSample{BandwidthMbps: 100, PacketLoss: 0.5})
	}
	h.Samples[20].PacketLoss = 2
	return []proto.Message{
		&pb.PredictBandwidthRequest{History: h},
		&pb.PredictBandwidthRequest{History: &pb.LinkHistory{Samples: h.Samples[:3]}},
		&pb.PredictBandwidthBatchRequest{},
		&pb.SelectCompressionRequest{Link: &pb.LinkState{LinkType: 9}, Payload: &pb.PayloadTraits{Sample: []byte("x")}},
		&pb.SelectCompressionRequest{Link: &pb.LinkState{LinkType: 1}, Payload: &pb.PayloadTraits{}},
		&pb.SelectCompressionRequest{Link: &pb.LinkState{LinkType: 1, RttMs: -1}, Payload: &pb.PayloadTraits{
			SizeBytes: 5, Sample: []byte("abc")}},
		&pb.DetectAnomalyRequest{},
		&pb.DetectAnomalyBatchRequest{Metrics: []*pb.NodeMetrics{{}, {ErrorRate: math.Inf(1)}}},
		&pb.DetectHighLatencyRequest{Window: &pb.ConsensusWindow{Samples: []*pb.ConsensusSample{{}}}},
		&pb.DetectHighLatencyRequest{Model: &pb.ModelSelector{Version: "7"}},
		&pb.DetectHighLatencyRequest{Model: &pb.ModelSelector{Label: "canary"}},
	}
}

// Same answers as the server: the real server on the bundled repository and the embedded runtime answer the same
// requests with every number within 1e-5 and identical decisions, and refuse the same requests with the same code.
func TestSameAnswersAsTheServer(t *testing.T) {
	r := open(t, bundledRepo(t))
	conn, err := grpc.NewClient(servertest.Target(t), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewInferenceServiceClient(conn)
	reqs := parityRequests(t)
	compared, refused := 0, 0
	decisions := map[string]bool{}
	for i, req := range reqs {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		want, werr := remote(ctx, client, req)
		cancel()
		got, gerr := call(context.Background(), r, req)
		if werr != nil || gerr != nil {
			ws, gs := status.Convert(werr), status.Convert(gerr)
			if ws.Code() != gs.Code() || field(ws.Message()) != field(gs.Message()) {
				t.Errorf("request %d (%T): server %v, embedded %v", i, req, werr, gerr)
			}
			if ws.Message() != gs.Message() { // the text may differ; the field and the code may not
				t.Logf("request %d: server says %q, embedded %q", i, ws.Message(), gs.Message())
			}
			refused++
			continue
		}
		if diff := differences(fmt.Sprintf("%T", got), got.ProtoReflect(), want.ProtoReflect()); len(diff) > 0 {
			if len(diff) > 8 {
				diff = append(diff[:8], "...")
			}
			t.Errorf("request %d (%T) answered differently (embedded vs server):\n%s", i, req, strings.Join(diff, "\n"))
		}
		compared++
		decisions[decisionOf(got)] = true
	}
	t.Logf("decisions seen: %v", decisions)
	for _, pair := range [][2]string{{"anomaly=true", "anomaly=false"}, {"high_latency=true", "high_latency=false"}} {
		if !decisions[pair[0]] || !decisions[pair[1]] {
			t.Errorf("the requests never gave both %s and %s: the comparison does not cover both", pair[0], pair[1])
		}
	}
	t.Logf("%d answers compared, %d refusals compared", compared, refused)
	if compared < 250 || refused < len(invalidRequests()) {
		t.Fatalf("only %d answers and %d refusals compared", compared, refused)
	}
}

// decisionOf names the decision of a single answer (the first item of a batch).
func decisionOf(resp proto.Message) string {
	switch r := resp.(type) {
	case *pb.SelectCompressionResponse:
		return fmt.Sprintf("choice=%v/%d", r.GetDecision().GetChoice().GetCodec(), r.GetDecision().GetChoice().GetLevel())
	case *pb.DetectAnomalyResponse:
		return fmt.Sprintf("anomaly=%v", r.GetVerdict().GetIsAnomaly())
	case *pb.DetectHighLatencyResponse:
		return fmt.Sprintf("high_latency=%v", r.GetVerdict().GetIsHighLatency())
	}
	return "other"
}

// field is the part of an error message before the first ": " (the field path).
func field(msg string) string {
	i := strings.Index(msg, ": ")
	if i < 0 {
		return msg
	}
	return msg[:i]
}
