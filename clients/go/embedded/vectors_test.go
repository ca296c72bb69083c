package embedded

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// Typed requests for the parity and behaviour tests: from a test vector's raw columns, and random valid ones.

func rawNumbers(t testing.TB, raw map[string]json.RawMessage, name string) []float64 {
	t.Helper()
	var out []float64
	if err := decodeFlat(raw[name], &out); err != nil {
		t.Fatalf("raw %s: %v", name, err)
	}
	return out
}

func rawWords(t testing.TB, raw map[string]json.RawMessage, name string) []string {
	t.Helper()
	var out []string
	if err := decodeFlat(raw[name], &out); err != nil {
		t.Fatalf("raw %s: %v", name, err)
	}
	return out
}

var linkTypeOf = map[string]pb.LinkType{"dc": pb.LinkType_LINK_TYPE_DC, "metro": pb.LinkType_LINK_TYPE_METRO,
	"wan": pb.LinkType_LINK_TYPE_WAN, "edge": pb.LinkType_LINK_TYPE_EDGE}

// vectorRequest turns a test vector's raw columns into the model's single request (integer fields rounded).
func vectorRequest(t testing.TB, model string, vec testVector) proto.Message {
	raw := vec.Raw
	switch model {
	case BandwidthModel:
		cols := map[string][]float64{}
		for _, f := range networkFields {
			cols[f] = rawNumbers(t, raw, f)
		}
		h := &pb.LinkHistory{}
		for j := range cols["bandwidth_mbps"] {
			h.Samples = append(h.Samples, &pb.NetworkSample{
				Timestamp:     &timestamppb.Timestamp{Seconds: 1_790_000_000 + int64(j)*300, Nanos: 250_000_000},
				BandwidthMbps: cols["bandwidth_mbps"][j],
				LatencyMs:     cols["latency_ms"][j], PacketLoss: cols["packet_loss"][j], JitterMs: cols["jitter_ms"][j],
				TimeOfDay: int32(math.Round(cols["time_of_day"][j])), DayOfWeek: int32(math.Round(cols["day_of_week"][j]))})
		}
		return &pb.PredictBandwidthRequest{History: h}
	case CompressionModel:
		return &pb.SelectCompressionRequest{
			Link: &pb.LinkState{ThroughputMbps: rawNumbers(t, raw, "throughput_mbps")[0],
				RttMs: rawNumbers(t, raw, "rtt_ms")[0], PacketLoss: rawNumbers(t, raw, "packet_loss")[0],
				LinkType: linkTypeOf[rawWords(t, raw, "link_type")[0]]},
			Payload: &pb.PayloadTraits{SizeBytes: int64(math.Max(1, math.Round(rawNumbers(t, raw, "size_bytes")[0]))),
				EntropyBitsPerByte:     ptr(rawNumbers(t, raw, "payload_entropy")[0]),
				RecentCompressionRatio: ptr(rawNumbers(t, raw, "payload_ratio")[0])}}
	case AnomalyModel:
		m := &pb.NodeMetrics{}
		for f, name := range nodeFields {
			setNode(m, f, rawNumbers(t, raw, name)[0])
		}
		return &pb.DetectAnomalyRequest{Metrics: m}
	}
	w := &pb.ConsensusWindow{}
	n := len(rawNumbers(t, raw, "queue_depth"))
	for j := 0; j < n; j++ {
		s := &pb.ConsensusSample{}
		for f, name := range consensusFields {
			if f >= 9 {
				setConsensusLabel(s, f, rawWords(t, raw, name)[j])
			} else {
				setConsensus(s, f, rawNumbers(t, raw, name)[j])
			}
		}
		w.Samples = append(w.Samples, s)
	}
	return &pb.DetectHighLatencyRequest{Window: w}
}

func setNode(m *pb.NodeMetrics, f int, x float64) {
	ptrs := []*float64{&m.ErrorRate, &m.TimeoutRate, &m.LatencyP50Ms, &m.LatencyP99Ms, &m.SlaViolations,
		&m.ConnectionFailures, &m.PacketLossRate, &m.CpuUsage, &m.MemoryUsage, &m.DiskIoMbps}
	*ptrs[f] = x
}

func setConsensus(s *pb.ConsensusSample, f int, x float64) {
	ptrs := []*float64{&s.QueueDepth, &s.ProposalsPending, &s.ProposalsCommitted, &s.LatencyP50Ms, &s.LatencyP95Ms,
		&s.LatencyP99Ms, &s.LeaderChanges, &s.QuorumSize, &s.ActiveNodes}
	*ptrs[f] = x
}

func setConsensusLabel(s *pb.ConsensusSample, f int, word string) {
	switch f {
	case 9:
		s.NetworkTier = word
	case 10:
		s.DwcpMode = word
	default:
		s.ConsensusType = word
	}
}

// valueIn draws a valid value of a raw field: uniform over its range a third of the time, else log-uniform
// (ranges span decades: 0..1e7 Mbps).
func valueIn(rng *rand.Rand, f rawField) float64 {
	lo, hi := f.lo(), f.hi()
	if math.IsInf(lo, 0) {
		lo = -1e6
	}
	if math.IsInf(hi, 0) {
		hi = 1e6
	}
	if rng.IntN(3) == 0 || hi <= 0 {
		return lo + (hi-lo)*rng.Float64()
	}
	floor := math.Max(lo, hi*1e-9)
	return math.Min(hi, math.Max(lo, math.Exp(math.Log(floor)+(math.Log(hi)-math.Log(floor))*rng.Float64())))
}

// randomRequest is a valid single request for the model's version (meta), with random values in its ranges.
func randomRequest(rng *rand.Rand, model string, meta *metadata) proto.Message {
	field := func(name string) rawField { f, _ := meta.rawField(name); return f }
	switch model {
	case BandwidthModel:
		h := &pb.LinkHistory{}
		n := meta.Window + rng.IntN(4)
		start := int64(1_700_000_000 + rng.IntN(1_000_000))
		for j := 0; j < n; j++ {
			h.Samples = append(h.Samples, &pb.NetworkSample{
				Timestamp:     &timestamppb.Timestamp{Seconds: start + int64(j)*5, Nanos: int32(rng.IntN(1e9))},
				BandwidthMbps: valueIn(rng, field("bandwidth_mbps")), LatencyMs: valueIn(rng, field("latency_ms")),
				PacketLoss: valueIn(rng, field("packet_loss")), JitterMs: valueIn(rng, field("jitter_ms")),
				TimeOfDay: int32(rng.IntN(24)), DayOfWeek: int32(rng.IntN(7))})
		}
		return &pb.PredictBandwidthRequest{History: h}
	case CompressionModel:
		p := &pb.PayloadTraits{SizeBytes: 1 + int64(valueIn(rng, field("size_bytes")))}
		if rng.IntN(2) == 0 {
			p.Sample = randomPayload(rng, 4096)
		} else {
			p.EntropyBitsPerByte = ptr(valueIn(rng, field("payload_entropy")))
			p.RecentCompressionRatio = ptr(valueIn(rng, field("payload_ratio")))
		}
		return &pb.SelectCompressionRequest{Payload: p, Link: &pb.LinkState{
			ThroughputMbps: valueIn(rng, field("throughput_mbps")), RttMs: valueIn(rng, field("rtt_ms")),
			PacketLoss: valueIn(rng, field("packet_loss")), LinkType: pb.LinkType(1 + rng.IntN(4))}}
	case AnomalyModel:
		m := &pb.NodeMetrics{}
		normal := rng.IntN(2) == 0 // half near the training data's normal values: both verdicts occur
		rule := anomalyNormal(meta)
		for f, name := range nodeFields {
			x := valueIn(rng, field(name))
			if stats, ok := rule[name]; ok && normal {
				x = clamp(stats[0]+stats[1]*rng.NormFloat64()*0.7, field(name))
			}
			setNode(m, f, x)
		}
		return &pb.DetectAnomalyRequest{Metrics: m}
	}
	if rng.IntN(2) == 0 { // half normal windows, as training/data/generators.py consensus_windows makes them
		return &pb.DetectHighLatencyRequest{Window: normalWindow(rng, meta.Window+rng.IntN(3))}
	}
	w := &pb.ConsensusWindow{}
	for j := 0; j < meta.Window+rng.IntN(3); j++ {
		s := &pb.ConsensusSample{}
		for f, name := range consensusFields {
			if f >= 9 {
				vocab := field(name).Vocabulary
				setConsensusLabel(s, f, vocab[rng.IntN(len(vocab))])
			} else {
				setConsensus(s, f, valueIn(rng, field(name)))
			}
		}
		w.Samples = append(w.Samples, s)
	}
	return &pb.DetectHighLatencyRequest{Window: w}
}

// randomPayload is n bytes of a random kind: text, random, repetitive or sparse.
func randomPayload(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	kind := rng.IntN(4)
	for i := range b {
		switch kind {
		case 0:
			b[i] = "the quick brown fox jumps over a lazy dog\n"[rng.IntN(42)]
		case 1:
			b[i] = byte(rng.IntN(256))
		case 2:
			b[i] = byte(i % 7)
		default:
			if rng.IntN(8) == 0 {
				b[i] = byte(rng.IntN(256))
			}
		}
	}
	return b
}

func clamp(x float64, f rawField) float64 { return math.Min(f.hi(), math.Max(f.lo(), x)) }

// anomalyNormal is the detector's normal mean and standard deviation of each field (its metadata's decision).
func anomalyNormal(meta *metadata) map[string][2]float64 {
	var d struct {
		Normal map[string][2]float64 `json:"normal"`
	}
	json.Unmarshal(meta.Decision, &d)
	return d.Normal
}

// normalWindow is a window of normal consensus behaviour (generators.py consensus_windows without an episode).
func normalWindow(rng *rand.Rand, n int) *pb.ConsensusWindow {
	tiers, modes, protos := []string{"tier1", "tier2", "tier3"}, []string{"datacenter", "internet", "hybrid"},
		[]string{"raft", "pbft", "gossip"}
	tier, mode, proto := rng.IntN(3), rng.IntN(3), rng.IntN(3)
	scale := []float64{2, 10, 40}[tier] * []float64{1, 3, 1.8}[mode] * []float64{1, 1.6, 1.3}[proto]
	active := float64([]int{3, 5, 7, 9}[rng.IntN(4)])
	rate := 50 + 450*rng.Float64()
	poisson := func(mean float64) float64 { return math.Max(0, math.Round(mean+math.Sqrt(mean)*rng.NormFloat64())) }
	w := &pb.ConsensusWindow{}
	for j := 0; j < n; j++ {
		base := scale * math.Exp(0.05*rng.NormFloat64())
		w.Samples = append(w.Samples, &pb.ConsensusSample{QueueDepth: poisson(5), ProposalsPending: poisson(3),
			ProposalsCommitted: rate * math.Exp(0.05*rng.NormFloat64()), LatencyP50Ms: base,
			LatencyP95Ms: base * (1.8 + 0.4*rng.Float64()), LatencyP99Ms: base * (2.6 + 0.8*rng.Float64()),
			QuorumSize: math.Floor(active/2) + 1, ActiveNodes: active, NetworkTier: tiers[tier],
			DwcpMode: modes[mode], ConsensusType: protos[proto]})
	}
	return w
}
