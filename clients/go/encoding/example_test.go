package encoding_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/dwcp/inference/clients/go/encoding"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

func TestMain(m *testing.M) { servertest.Main(m) }

// The DWCP call site: pick a codec per payload.
func ExampleCompressionSelector() {
	// DWCP's call, with the service's address given as an option (or by $DWCP_INFERENCE_TARGET).
	cs := encoding.NewCompressionSelector(encoding.ModeInternet, nil,
		encoding.WithClientOptions(inference.WithTarget(servertest.Target(nil))))
	defer cs.Close()
	text := bytes.Repeat([]byte("consensus proposal committed by node-7; "), 20000)
	noise := make([]byte, 1<<20)
	rand.Read(noise)
	cs.UpdateLink(encoding.Link{ThroughputMbps: 20, RTTMs: 80, PacketLoss: 0.001})
	fmt.Println("text on a slow WAN is compressed:", cs.SelectCompression(text, encoding.ModeInternet) != encoding.CompressionNone)
	fmt.Println("noise is not zstd-max:", cs.SelectCompression(noise, encoding.ModeInternet) != encoding.CompressionZstdMax)
	fmt.Println("fallbacks:", cs.Fallbacks())
	// Output:
	// text on a slow WAN is compressed: true
	// noise is not zstd-max: true
	// fallbacks: 0
}

func TestFallsBackWhenTheServiceIsDown(t *testing.T) {
	client, _ := inference.New(inference.WithTarget("127.0.0.1:1"), inference.WithRetries(1, 0))
	defer client.Close()
	always := func([]byte, encoding.NetworkMode) encoding.CompressionAlgorithm { return encoding.CompressionBrotli }
	cfg := &encoding.SelectorConfig{SmallDataSize: 0, LearningRate: 0.1}
	cs := encoding.NewCompressionSelector(encoding.ModeDatacenter, cfg, encoding.WithClient(client), encoding.WithFallback(always))
	sel := cs.Select([]byte("x"), encoding.ModeDatacenter)
	if sel.Algorithm != encoding.CompressionBrotli || !sel.FromFallback || sel.Err == nil || cs.Fallbacks() != 1 {
		t.Fatalf("got %+v with %d fallbacks", sel, cs.Fallbacks())
	}
	if sel.Source != inference.SourceRule || cs.Metrics().Fallbacks("SelectCompression", inference.SourceRemote, "unavailable") != 1 {
		t.Fatalf("source %q; counters disagree", sel.Source)
	}
	hybrid := encoding.NewCompressionSelector(encoding.ModeHybrid, cfg, encoding.WithClient(client))
	if got := hybrid.SelectCompression([]byte("y"), encoding.ModeHybrid); got != encoding.CompressionZstd {
		t.Fatalf("DWCP's rule gave %v for hybrid without adaptive selection, want Zstd", got)
	}
}

func TestDWCPRuleAnswersAsDWCPsSelectorDoes(t *testing.T) {
	client, _ := inference.New(inference.WithTarget("127.0.0.1:1"), inference.WithRetries(1, 0))
	defer client.Close()
	text := bytes.Repeat([]byte("consensus proposal committed by node-7; "), 1000) // 40 KB
	noise := make([]byte, 64<<10)
	rand.Read(noise)
	adaptive := encoding.DefaultSelectorConfig()
	cs := encoding.NewCompressionSelector(encoding.ModeInternet, adaptive, encoding.WithClient(client))
	defer cs.Close()
	for _, tc := range []struct {
		data []byte
		mode encoding.NetworkMode
		want encoding.CompressionAlgorithm
	}{
		{noise, encoding.ModeInternet, encoding.CompressionNone}, // entropy too high
		{text, encoding.ModeDatacenter, encoding.CompressionLZ4}, // under 100 KiB in a datacenter
		{bytes.Repeat(text, 4), encoding.ModeDatacenter, encoding.CompressionZstd},
		{text, encoding.ModeInternet, encoding.CompressionZstdMax}, // text on the internet
		{text, encoding.ModeHybrid, encoding.CompressionZstd},      // hybrid, nothing measured yet
	} {
		sel := cs.Select(tc.data, tc.mode)
		if sel.Algorithm != tc.want || sel.Source != inference.SourceRule || sel.ModelVersion != "rule:dwcp_v3" {
			t.Errorf("%d bytes in %v: %+v, want %v", len(tc.data), tc.mode, sel, tc.want)
		}
	}
	cs.RecordPerformance(encoding.CompressionLZ4, 1<<20, 1<<19, time.Millisecond) // 2x at 1000 MB/s
	cs.RecordPerformance(encoding.CompressionZstd, 1<<20, 1<<18, 100*time.Millisecond)
	if got := cs.SelectCompression(text, encoding.ModeHybrid); got != encoding.CompressionLZ4 {
		t.Errorf("hybrid after LZ4 measured fastest: %v", got)
	}
}

func TestSmallPayloadsAreNotCompressedAndNotAsked(t *testing.T) {
	client, _ := inference.New(inference.WithTarget("127.0.0.1:1"), inference.WithRetries(1, 0))
	defer client.Close()
	cs := encoding.NewCompressionSelector(encoding.ModeInternet, nil, encoding.WithClient(client))
	if sel := cs.Select(make([]byte, 100), encoding.ModeInternet); sel.Algorithm != encoding.CompressionNone || sel.FromFallback {
		t.Fatalf("a 100-byte payload: %+v", sel)
	}
	if encoding.CompressionZstdMax.String() != "zstd-max" || encoding.ModeHybrid.String() != "hybrid" ||
		encoding.GetCompressionLevel(encoding.CompressionZstdMax) != 19 {
		t.Fatal("names or levels differ from DWCP's")
	}
}
