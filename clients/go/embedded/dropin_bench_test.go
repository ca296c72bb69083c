package embedded

import (
	"testing"

	"github.com/dwcp/inference/clients/go/encoding"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/prediction"
)

// A drop-in call through its chain: the service's versions synced into a cache and run in-process
// (WithLocalCache), beside the same call answered by the service over loopback gRPC. cpu-ns/op is this
// process's CPU time per call (for the remote rows the server's own CPU is not in it):
//
//	go test -run '^$' -bench DropIn -benchmem ./embedded

func benchSelector(b *testing.B, opts ...encoding.Option) {
	needLibrary(b)
	target := servertest.Target(b)
	cs := encoding.NewCompressionSelector(encoding.ModeInternet, nil,
		append([]encoding.Option{encoding.WithClientOptions(inference.WithTarget(target))}, opts...)...)
	defer cs.Close()
	data := jsonPayload(64 << 10) // the selector reads its first 4 KiB
	want := inference.SourceRemote
	if cs.Sources()[0] == inference.SourceEmbedded {
		want = inference.SourceEmbedded
	}
	if sel := cs.Select(data, encoding.ModeInternet); sel.Source != want {
		b.Fatalf("answered by %s, want %s: %+v", sel.Source, want, sel)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for b.Loop() {
		if sel := cs.Select(data, encoding.ModeInternet); sel.Source != want {
			b.Fatalf("answered by %s, want %s", sel.Source, want)
		}
	}
	reportCPU(b, cpu)
}

func BenchmarkDropInSelectEmbedded(b *testing.B) {
	benchSelector(b, encoding.WithLocalCache(b.TempDir()))
}

func BenchmarkDropInSelectRemote(b *testing.B) {
	benchSelector(b, encoding.WithSourceOrder(inference.SourceRemote))
}

func benchPredictor(b *testing.B, want inference.Source, opts ...prediction.Option) {
	needLibrary(b)
	p, err := prediction.NewLSTMPredictor("", append([]prediction.Option{
		prediction.WithTarget(servertest.Target(b))}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	history := linkHistory()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for b.Loop() {
		pred, err := p.Predict(history)
		if err != nil || pred.Source != want {
			b.Fatalf("answered by %s (%v), want %s", pred.Source, err, want)
		}
	}
	reportCPU(b, cpu)
}

func BenchmarkDropInPredictEmbedded(b *testing.B) {
	benchPredictor(b, inference.SourceEmbedded, prediction.WithLocalCache(b.TempDir()))
}

func BenchmarkDropInPredictRemote(b *testing.B) {
	benchPredictor(b, inference.SourceRemote, prediction.WithSourceOrder(inference.SourceRemote))
}
