package inference

import (
	"context"
	"math"
	"testing"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// FuzzFeatureLayouts: any slice given to ModelInferenceClient is either refused with an error or turned into a
// request, never a panic; the fake answers everything.
func FuzzFeatureLayouts(f *testing.F) {
	f.Add(uint8(6), 500.0, 2.0)
	f.Add(uint8(7), math.NaN(), -1.0)
	f.Add(uint8(0), math.Inf(1), 3.5)
	m := NewFromClient(&answerAll{}).Features(DefaultDeployment())
	f.Fuzz(func(t *testing.T, n uint8, a, b float64) {
		values := make([]float64, n)
		for i := range values {
			values[i] = a
			if i%2 == 1 {
				values[i] = b
			}
		}
		ctx := context.Background()
		_, errBW := m.PredictBandwidth(ctx, values)
		if (len(values) == 0 || len(values)%BandwidthSampleWidth != 0) != (errBW != nil) {
			t.Fatalf("PredictBandwidth(%d values): err %v", len(values), errBW)
		}
		_, errSC := m.SelectCompression(ctx, values)
		if len(values) != CompressionWidth && errSC == nil {
			t.Fatalf("SelectCompression accepted %d values", len(values))
		}
		_, _, errAN := m.DetectAnomaly(ctx, values)
		if (len(values) != AnomalyWidth) != (errAN != nil) {
			t.Fatalf("DetectAnomaly(%d values): err %v", len(values), errAN)
		}
		_, errHL := m.DetectHighLatency(ctx, values)
		if (len(values) == 0 || len(values)%ConsensusSampleWidth != 0) != (errHL != nil) {
			t.Fatalf("DetectHighLatency(%d values): err %v", len(values), errHL)
		}
	})
}

// FuzzAlgorithm: every codec and level maps to one of DWCP's algorithm numbers.
func FuzzAlgorithm(f *testing.F) {
	f.Add(int32(3), int32(19))
	f.Fuzz(func(t *testing.T, codec, level int32) {
		got := Algorithm(&pb.CompressionChoice{Codec: pb.Codec(codec), Level: level})
		if got < AlgorithmNone || got > AlgorithmBrotli {
			t.Fatalf("codec %d level %d -> %d", codec, level, got)
		}
	})
}
