package embedded

import (
	"context"
	"path/filepath"
	"testing"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// The toolchain: libonnxruntime from the .venv runs the bundled compression_selector on a raw test vector.
func TestRunsTheBundledSelectorOnARawTestVector(t *testing.T) {
	needLibrary(t)
	lib, _ := FindLibrary("")
	if err := startEnvironment(lib); err != nil {
		t.Fatal(err)
	}
	v, err := loadVersion(CompressionModel, filepath.Join(bundledRepo(t), CompressionModel, "1"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	for i, vec := range v.meta.TestVectors { // loadVersion verified them already: this shows the check bites
		if err := v.checkVector(i, vec); err != nil {
			t.Fatal(err)
		}
	}
	r := open(t, bundledRepo(t))
	resp, err := r.SelectCompression(context.Background(), &pb.SelectCompressionRequest{
		Link: &pb.LinkState{ThroughputMbps: 497.5, RttMs: 1.0156, PacketLoss: 4.185e-06,
			LinkType: pb.LinkType_LINK_TYPE_EDGE},
		Payload: &pb.PayloadTraits{SizeBytes: 2272, EntropyBitsPerByte: ptr(6.5625),
			RecentCompressionRatio: ptr(1.0742)}})
	if err != nil {
		t.Fatal(err)
	}
	// The vector's outputs put 0.998 on the first choice (none) for nearly these inputs.
	if c := resp.GetDecision().GetChoice(); c.GetCodec() != pb.Codec_CODEC_NONE || c.GetScore() < 0.99 {
		t.Fatalf("choice %v, expected none with a score near 0.998", c)
	}
	if m := resp.GetModel(); m.GetName() != CompressionModel || m.GetVersion() != "1" {
		t.Fatalf("model %v", m)
	}
}

func ptr[T any](v T) *T { return &v }
