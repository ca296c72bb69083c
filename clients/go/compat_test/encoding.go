package compat_test

import (
	"time"

	"github.com/dwcp/inference/clients/go/encoding"
)

// As DWCP's v3 HDE encoder uses its compression selector. The one deviation: NetworkMode comes from our
// encoding package, where DWCP's comes from its upgrade package.
func dwcpEncoding(data []byte) error {
	type hdeConfig struct {
		NetworkMode    encoding.NetworkMode
		SelectorConfig *encoding.SelectorConfig
	}
	config := hdeConfig{NetworkMode: encoding.ModeInternet, SelectorConfig: encoding.DefaultSelectorConfig()}
	config.SelectorConfig.LearningRate, config.SelectorConfig.AdaptiveEnabled = 0.1, true
	config.SelectorConfig.SmallDataSize, config.SelectorConfig.LargeDataSize = 1024, 1<<20
	config.SelectorConfig.DatacenterTargetSpeed, config.SelectorConfig.InternetTargetRatio = 1000, 5
	var cs *encoding.CompressionSelector = encoding.NewCompressionSelector(config.NetworkMode, config.SelectorConfig)
	var algo encoding.CompressionAlgorithm = cs.SelectCompression(data, config.NetworkMode)
	switch algo {
	case encoding.CompressionNone, encoding.CompressionLZ4, encoding.CompressionZstd, encoding.CompressionZstdMax,
		encoding.CompressionBrotli:
	}
	_ = algo.String() + config.NetworkMode.String()
	var level int = encoding.GetCompressionLevel(algo)
	_ = level
	cs.RecordPerformance(algo, len(data), len(data)/2, time.Millisecond)
	var stats map[string]interface{} = cs.GetStats()
	_ = stats
	cs.UpdateMode(encoding.ModeDatacenter)
	_ = []encoding.NetworkMode{encoding.ModeDatacenter, encoding.ModeInternet, encoding.ModeHybrid}
	_ = encoding.DataCharacteristics{Size: 1, Entropy: 0.5, Compressible: true, RepeatPattern: false, TextLike: true, BinaryLike: false}
	_ = encoding.AlgorithmStats{TotalBytes: 1, CompressedBytes: 1, TotalTime: time.Second, UseCount: 1, AverageRatio: 1,
		AverageSpeed: 1, LastUsed: time.Now()}
	return cs.Close()
}
