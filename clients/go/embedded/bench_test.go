package embedded

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

// Single calls, everything included (request -> raw columns -> checks -> model -> decision -> response), on the
// bundled versions: go test -run '^$' -bench . -benchmem ./embedded

func benchRequests() map[string]proto.Message {
	rng := rand.New(rand.NewPCG(1, 2))
	link := &pb.LinkState{ThroughputMbps: 100, RttMs: 40, LinkType: pb.LinkType_LINK_TYPE_WAN, PacketLoss: 0.001}
	history := &pb.LinkHistory{}
	for i := 0; i < 24; i++ {
		history.Samples = append(history.Samples, &pb.NetworkSample{BandwidthMbps: 480 + float64(i), LatencyMs: 21,
			PacketLoss: 0.001, JitterMs: 2, TimeOfDay: 14, DayOfWeek: 2})
	}
	window := &pb.ConsensusWindow{}
	for i := 0; i < 20; i++ {
		window.Samples = append(window.Samples, &pb.ConsensusSample{QueueDepth: 5, ProposalsPending: 3,
			ProposalsCommitted: 200, LatencyP50Ms: 10, LatencyP95Ms: 20, LatencyP99Ms: 30, QuorumSize: 3,
			ActiveNodes: 5, NetworkTier: "tier2", DwcpMode: "datacenter", ConsensusType: "raft"})
	}
	return map[string]proto.Message{
		"SelectCompression/traits": &pb.SelectCompressionRequest{Link: link, Payload: &pb.PayloadTraits{
			SizeBytes: 1 << 20, EntropyBitsPerByte: ptr(5.2), RecentCompressionRatio: ptr(0.4)}},
		"SelectCompression/sample4KiB": &pb.SelectCompressionRequest{Link: link, Payload: &pb.PayloadTraits{
			SizeBytes: 1 << 20, Sample: jsonPayload(4096)}},
		"SelectCompression/sample4KiBRandom": &pb.SelectCompressionRequest{Link: link, Payload: &pb.PayloadTraits{
			SizeBytes: 1 << 20, Sample: incompressible(rng, 4096)}},
		"DetectAnomaly": &pb.DetectAnomalyRequest{Metrics: &pb.NodeMetrics{ErrorRate: 0.2, TimeoutRate: 0.002,
			LatencyP50Ms: 20, LatencyP99Ms: 55, CpuUsage: 0.4, MemoryUsage: 0.45, DiskIoMbps: 20}},
		"DetectHighLatency": &pb.DetectHighLatencyRequest{Window: window},
		"PredictBandwidth":  &pb.PredictBandwidthRequest{History: history},
	}
}

func benchEmbedded(b *testing.B, name string) {
	r := open(b, bundledRepo(b))
	req := benchRequests()[name]
	ctx := context.Background()
	if _, err := call(ctx, r, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for b.Loop() {
		if _, err := call(ctx, r, req); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu)
}

// cpuTime is the process's user and system CPU time. Per call it is the work a call costs even when the machine
// is shared (ns/op then counts the time waiting for a core too).
func cpuTime() time.Duration {
	var u syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &u)
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(cpuTime()-since)/float64(b.N), "cpu-ns/op")
}

func BenchmarkSelectCompressionTraits(b *testing.B) { benchEmbedded(b, "SelectCompression/traits") }
func BenchmarkSelectCompressionSample4KiB(b *testing.B) {
	benchEmbedded(b, "SelectCompression/sample4KiB")
}
func BenchmarkSelectCompressionSample4KiBRandom(b *testing.B) {
	benchEmbedded(b, "SelectCompression/sample4KiBRandom")
}
func BenchmarkDetectAnomaly(b *testing.B)     { benchEmbedded(b, "DetectAnomaly") }
func BenchmarkDetectHighLatency(b *testing.B) { benchEmbedded(b, "DetectHighLatency") }
func BenchmarkPredictBandwidth(b *testing.B)  { benchEmbedded(b, "PredictBandwidth") }

// jsonPayload is n bytes of JSON records, a typical compressible payload.
func jsonPayload(n int) []byte {
	var out []byte
	for i := 0; len(out) < n; i++ {
		out = fmt.Appendf(out, `{"vm":"vm-%04d","page":%d,"dirty":%t,"crc":"%08x"},`, i%97, i*4096, i%3 == 0,
			uint32(i)*2654435761)
	}
	return out[:n]
}

// incompressible is n random bytes, zlib's slowest case at level 1.
func incompressible(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	return b
}

// The payload traits alone (entropy and the zlib level-1 ratio of a 4 KiB JSON sample).
func BenchmarkPayloadTraits4KiB(b *testing.B) {
	sample := jsonPayload(4096)
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		ByteEntropy(sample)
		SampleRatio(sample)
	}
	reportCPU(b, cpu)
}

// The same calls to the server over loopback gRPC, for comparison (starts `dwcp-inference serve` when
// $DWCP_INFERENCE_TARGET names none).
func benchRemote(b *testing.B, name string) {
	conn, err := grpc.NewClient(servertest.Target(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewInferenceServiceClient(conn)
	req := benchRequests()[name]
	ctx := context.Background()
	if _, err := remote(ctx, client, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := remote(ctx, client, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRemoteSelectCompressionTraits(b *testing.B) { benchRemote(b, "SelectCompression/traits") }
func BenchmarkRemoteDetectAnomaly(b *testing.B)           { benchRemote(b, "DetectAnomaly") }
func BenchmarkRemotePredictBandwidth(b *testing.B)        { benchRemote(b, "PredictBandwidth") }
func BenchmarkRemoteDetectHighLatency(b *testing.B)       { benchRemote(b, "DetectHighLatency") }
func BenchmarkRemoteSelectCompressionSample(b *testing.B) {
	benchRemote(b, "SelectCompression/sample4KiB")
}

// The model alone (pooled tensors, one session run), for reference beside the whole calls.
func benchModelOnly(b *testing.B, model string) {
	r := open(b, bundledRepo(b))
	v := r.snap.Load().models[model].versions["1"]
	b.ReportAllocs()
	cpu := cpuTime()
	for b.Loop() {
		bind, err := v.bind(1)
		if err != nil {
			b.Fatal(err)
		}
		if err := v.run(bind); err != nil {
			b.Fatal(err)
		}
		v.release(bind)
	}
	reportCPU(b, cpu)
}

func BenchmarkModelOnlySelector(b *testing.B)  { benchModelOnly(b, CompressionModel) }
func BenchmarkModelOnlyDetector(b *testing.B)  { benchModelOnly(b, AnomalyModel) }
func BenchmarkModelOnlyBandwidth(b *testing.B) { benchModelOnly(b, BandwidthModel) }
func BenchmarkModelOnlyLatency(b *testing.B)   { benchModelOnly(b, LatencyModel) }
