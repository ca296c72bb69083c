// Command cached runs the inference service's versions in its own process: it names only the service and a
// cache directory. The bandwidth predictor and the compression selector sync their models from the service into
// the cache and answer in-process, the service second, DWCP's rule last; stop the service and they keep answering
// from the cache, also when the command is run again. Needs cgo and libonnxruntime (see clients/go/README.md):
//
//	go run ./examples/cached -target 127.0.0.1:50051 -cache /tmp/dwcp-models
package main

import (
	"flag"
	"fmt"
	"log"
	"time"

	_ "github.com/dwcp/inference/clients/go/embedded" // the local runtime: models run in-process
	"github.com/dwcp/inference/clients/go/encoding"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/prediction"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "inference service address")
	cache := flag.String("cache", "/tmp/dwcp-models", "directory the service's versions are synced into")
	flag.Parse()

	predictor, err := prediction.NewLSTMPredictor("", prediction.WithTarget(*target),
		prediction.WithLocalCache(*cache))
	if err != nil {
		log.Fatal(err)
	}
	defer predictor.Close()
	var history []prediction.NetworkSample
	now := time.Now().UTC().Truncate(time.Minute)
	for i := 0; i < 24; i++ {
		ts := now.Add(time.Duration(i-24) * 5 * time.Second)
		history = append(history, prediction.NetworkSample{Timestamp: ts, BandwidthMbps: 480 + float64(i%7),
			LatencyMs: 22, PacketLoss: 0.001, JitterMs: 2, TimeOfDay: ts.Hour(), DayOfWeek: int(ts.Weekday())})
	}
	pred, err := predictor.Predict(history)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("next bandwidth %.1f Mbps (model %s, answered by %s)\n", pred.PredictedBandwidthMbps,
		pred.ModelVersion, pred.Source)

	selector := encoding.NewCompressionSelector(encoding.ModeInternet, nil,
		encoding.WithClientOptions(inference.WithTarget(*target)), encoding.WithLocalCache(*cache))
	defer selector.Close()
	if err := selector.LocalError(); err != nil {
		log.Printf("the selector's model does not run in-process: %v", err)
	}
	sel := selector.Select([]byte(fmt.Sprintf("%0200000d", 42)), encoding.ModeInternet)
	fmt.Printf("compression for a 200 kB payload: %s (model %s, answered by %s)\n", sel.Algorithm,
		sel.ModelVersion, sel.Source)
}
