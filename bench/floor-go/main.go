// The Go floor: a grpc-go server whose every inference RPC returns an empty reply at once. It is what a
// compiled server costs per call with no work at all; run it with GOMAXPROCS=1 for one core.
//
//	go run . -addr 127.0.0.1:50061
package main

import (
	"context"
	"flag"
	"log"
	"net"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"google.golang.org/grpc"
)

type empty struct {
	pb.UnimplementedInferenceServiceServer
}

func (empty) PredictBandwidth(context.Context, *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	return &pb.PredictBandwidthResponse{}, nil
}

func (empty) PredictBandwidthBatch(context.Context, *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, error) {
	return &pb.PredictBandwidthBatchResponse{}, nil
}

func (empty) SelectCompression(context.Context, *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
	return &pb.SelectCompressionResponse{}, nil
}

func (empty) SelectCompressionBatch(context.Context, *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, error) {
	return &pb.SelectCompressionBatchResponse{}, nil
}

func (empty) DetectAnomaly(context.Context, *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	return &pb.DetectAnomalyResponse{}, nil
}

func (empty) DetectAnomalyBatch(context.Context, *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, error) {
	return &pb.DetectAnomalyBatchResponse{}, nil
}

func (empty) DetectHighLatency(context.Context, *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error) {
	return &pb.DetectHighLatencyResponse{}, nil
}

func (empty) DetectHighLatencyBatch(context.Context, *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, error) {
	return &pb.DetectHighLatencyBatchResponse{}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50061", "address to listen on")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterInferenceServiceServer(s, empty{})
	log.Fatal(s.Serve(lis))
}
