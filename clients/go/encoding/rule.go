package encoding

import (
	"context"
	"math"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// DWCPRule is DWCP v3's own selection rule (ml_compression_selector.go selectByMode), the selector's default
// Fallback: payloads under SmallDataSize or not compressible (entropy of the first 256 bytes, normalised to
// 0..1, at 0.85 or more) are sent as they are; in a datacenter LZ4 under 100 KiB, else Zstd; on the internet
// ZstdMax for repetitive or text-like payloads and those over LargeDataSize, else Zstd; hybrid links pick,
// among LZ4, Zstd and ZstdMax, the best ratio x speed that RecordPerformance measured (Zstd before any), when
// AdaptiveEnabled. DWCP computes log2 by its own series; this uses math.Log2 (the same to about 1e-12).
func (cs *CompressionSelector) DWCPRule(data []byte, mode NetworkMode) CompressionAlgorithm {
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	chars := analyzeData(data)
	if chars.Size < cs.config.SmallDataSize || !chars.Compressible || chars.Entropy > 0.9 {
		return CompressionNone
	}
	switch mode {
	case ModeDatacenter:
		if chars.Size < 100*1024 {
			return CompressionLZ4
		}
		return CompressionZstd
	case ModeInternet:
		if chars.RepeatPattern || chars.TextLike || chars.Size > cs.config.LargeDataSize {
			return CompressionZstdMax
		}
		return CompressionZstd
	case ModeHybrid:
		if cs.config.AdaptiveEnabled {
			return cs.selectAdaptive(chars)
		}
	}
	return CompressionZstd
}

// selectAdaptive is DWCP's choice on hybrid links from the measured performance (cs.mu held).
func (cs *CompressionSelector) selectAdaptive(chars DataCharacteristics) CompressionAlgorithm {
	best, bestScore := CompressionZstd, 0.0
	for _, algo := range []CompressionAlgorithm{CompressionLZ4, CompressionZstd, CompressionZstdMax} {
		stats := cs.stats[algo]
		if stats == nil || stats.UseCount == 0 {
			continue
		}
		score := stats.AverageRatio * (stats.AverageSpeed / 100.0)
		if chars.RepeatPattern && algo == CompressionZstdMax {
			score *= 1.5
		}
		if chars.Size < 10*1024 && algo == CompressionLZ4 {
			score *= 1.3
		}
		if score > bestScore {
			best, bestScore = algo, score
		}
	}
	return best
}

// analyzeData is DWCP's look at a payload's first 256 bytes.
func analyzeData(data []byte) DataCharacteristics {
	chars := DataCharacteristics{Size: len(data)}
	if len(data) == 0 {
		return chars
	}
	n := min(256, len(data))
	var freq [256]int
	repeats, printable := 0, 0
	for i := 0; i < n; i++ {
		freq[data[i]]++
		if i > 0 && data[i] == data[i-1] {
			repeats++
		}
		if data[i] >= 32 && data[i] <= 126 {
			printable++
		}
	}
	entropy := 0.0
	for _, count := range freq {
		if count > 0 {
			p := float64(count) / float64(n)
			entropy -= p * math.Log2(p)
		}
	}
	chars.Entropy = entropy / 8.0
	chars.Compressible = chars.Entropy < 0.85
	chars.RepeatPattern = float64(repeats)/float64(n) > 0.3
	chars.TextLike = float64(printable)/float64(n) > 0.7
	chars.BinaryLike = !chars.TextLike
	return chars
}

// selectorRule is the selector's Fallback as the chain's last source.
type selectorRule struct {
	inference.UnimplementedAnswerer
	cs *CompressionSelector
}

var modeOfLink = map[pb.LinkType]NetworkMode{pb.LinkType_LINK_TYPE_DC: ModeDatacenter,
	pb.LinkType_LINK_TYPE_METRO: ModeHybrid, pb.LinkType_LINK_TYPE_WAN: ModeInternet,
	pb.LinkType_LINK_TYPE_EDGE: ModeInternet}

func (r selectorRule) SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
	data, ok := ctx.Value(payloadKey{}).([]byte)
	if !ok {
		data = req.GetPayload().GetSample()
	}
	mode, ok := modeOfLink[req.GetLink().GetLinkType()]
	if !ok {
		mode = ModeInternet
	}
	algo := r.cs.fallback(data, mode)
	return &pb.SelectCompressionResponse{Model: &pb.ModelRef{Name: "rule", Version: "dwcp_v3"},
		Decision: &pb.CompressionDecision{Choice: choiceOf(algo)}}, nil
}

// choiceOf is the service's codec and level for an algorithm (inference.Algorithm's inverse).
func choiceOf(algo CompressionAlgorithm) *pb.CompressionChoice {
	codec := map[CompressionAlgorithm]pb.Codec{CompressionNone: pb.Codec_CODEC_NONE, CompressionLZ4: pb.Codec_CODEC_LZ4,
		CompressionZstd: pb.Codec_CODEC_ZSTD, CompressionZstdMax: pb.Codec_CODEC_ZSTD,
		CompressionBrotli: pb.Codec_CODEC_BROTLI}[algo]
	return &pb.CompressionChoice{Codec: codec, Level: int32(GetCompressionLevel(algo))}
}
