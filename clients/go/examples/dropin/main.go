// Command dropin is a DWCP caller of the bandwidth predictor, the anomaly detector and the compression
// selector. Its code is written against DWCP's APIs; only its imports changed, from DWCP's in-process packages
//
//	"<dwcp module>/network/dwcp/prediction"
//	"<dwcp module>/network/dwcp/monitoring"
//	"<dwcp module>/network/dwcp/encoding"
//
// to the packages below, which ask the inference service (and the one line that makes the client the
// monitoring and encoding packages take). Run it against a server:
//
//	go run ./examples/dropin -target 127.0.0.1:50051
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"go.uber.org/zap"

	"github.com/dwcp/inference/clients/go/consensus"
	"github.com/dwcp/inference/clients/go/encoding"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/monitoring"
	"github.com/dwcp/inference/clients/go/prediction"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "inference service address")
	flag.Parse()

	// --- DWCP code from here on: unchanged.
	predictor, err := prediction.NewLSTMPredictor(*target)
	if err != nil {
		log.Fatal(err)
	}
	defer predictor.Close()
	var history []prediction.NetworkSample
	now := time.Date(2026, 1, 6, 9, 0, 0, 0, time.UTC)
	for i := 0; i < 30; i++ {
		ts := now.Add(time.Duration(i) * 5 * time.Minute)
		history = append(history, prediction.NetworkSample{Timestamp: ts, BandwidthMbps: 480 + float64(i%7),
			LatencyMs: 22, PacketLoss: 0.001, JitterMs: 2, TimeOfDay: ts.Hour(), DayOfWeek: int(ts.Weekday()),
			NodeID: "node-1", PeerID: "node-2"})
	}
	pred, err := predictor.Predict(history)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("next bandwidth %.1f Mbps (confidence %.2f, model %s, answered by %s)\n", pred.PredictedBandwidthMbps,
		pred.Confidence, pred.ModelVersion, pred.Source)
	predictor.UpdateActual(pred.ValidUntil, prediction.NetworkSample{Timestamp: pred.ValidUntil, BandwidthMbps: 483})
	fmt.Printf("metrics: %+v\n", predictor.GetMetrics())

	client, err := inference.New(inference.WithTarget(*target))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	var detector monitoring.Detector = monitoring.NewInferenceDetector(client)
	anomaly, err := detector.Detect(context.Background(), &monitoring.MetricVector{Timestamp: now, Latency: 20,
		PacketLoss: 0.001, CPUUsage: 0.4, MemoryUsage: 0.45, ErrorRate: 0.3})
	if err != nil {
		log.Fatal(err)
	}
	if anomaly != nil {
		fmt.Printf("anomaly: %s (%s)\n", anomaly.Description, anomaly.Severity)
	}

	selector := encoding.NewCompressionSelector(encoding.ModeInternet, nil, encoding.WithClient(client))
	defer selector.Close()
	payload := []byte(fmt.Sprintf("%0200000d", 42))
	fmt.Printf("compression for a 200 kB payload over the internet: %s\n",
		selector.SelectCompression(payload, encoding.ModeInternet))

	// DWCP v3's detector (its v3/monitoring package; ours is consensus), with the cluster's measured state.
	consensusDetector := consensus.NewAnomalyDetector(nil, zap.NewNop(), consensus.WithClient(client))
	defer consensusDetector.Close()
	consensusDetector.UpdateConsensusState(consensus.ConsensusState{QueueDepth: 5, ProposalsPending: 3,
		ProposalsCommitted: 200, QuorumSize: 3, ActiveNodes: 5, LatencyP95Ms: 20, LatencyP99Ms: 30})
	for i := 0; i < consensus.Window; i++ {
		consensusDetector.CheckConsensusLatency(10)
	}
	source, err := consensusDetector.LastSource()
	fmt.Printf("consensus rounds judged by: %s (%v)\n", source, err)
}
