package encoding_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/dwcp/inference/clients/go/encoding"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

func TestMain(m *testing.M) { servertest.Main(m) }

// The DWCP call site: pick a codec per payload.
func ExampleCompressionSelector() {
	client, err := inference.New(inference.WithTarget(servertest.Target()))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	cs := encoding.NewCompressionSelector(client, nil)
	text := bytes.Repeat([]byte("consensus proposal committed by node-7; "), 20000)
	noise := make([]byte, 1<<20)
	rand.Read(noise)
	cs.UpdateLink(encoding.Link{ThroughputMbps: 20, RTTMs: 80, PacketLoss: 0.001})
	fmt.Println("text on a slow WAN is compressed:", cs.SelectCompression(text, encoding.ModeInternet) != encoding.None)
	fmt.Println("noise is not zstd-max:", cs.SelectCompression(noise, encoding.ModeInternet) != encoding.ZstdMax)
	fmt.Println("fallbacks:", cs.Fallbacks())
	// Output:
	// text on a slow WAN is compressed: true
	// noise is not zstd-max: true
	// fallbacks: 0
}

func TestFallsBackWhenTheServiceIsDown(t *testing.T) {
	client, _ := inference.New(inference.WithTarget("127.0.0.1:1"), inference.WithRetries(1, 0))
	defer client.Close()
	always := func([]byte, encoding.NetworkMode) encoding.CompressionAlgorithm { return encoding.Brotli }
	cs := encoding.NewCompressionSelector(client, always)
	sel := cs.Select([]byte("x"), encoding.ModeDatacenter)
	if sel.Algorithm != encoding.Brotli || !sel.FromFallback || sel.Err == nil || cs.Fallbacks() != 1 {
		t.Fatalf("got %+v with %d fallbacks", sel, cs.Fallbacks())
	}
	if got := encoding.NewCompressionSelector(client, nil).SelectCompression(nil, encoding.ModeHybrid); got != encoding.LZ4 {
		t.Fatalf("default fallback gave %v for hybrid, want LZ4", got)
	}
}
