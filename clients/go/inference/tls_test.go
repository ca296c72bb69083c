package inference

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"
	"testing"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

func tlsConfig(t *testing.T, caFile string) *tls.Config {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// TestTLS calls a TLS server (tests/test_hardening.py starts one) with the right CA, then with a wrong one.
func TestTLS(t *testing.T) {
	target := os.Getenv("DWCP_TLS_TARGET")
	if target == "" {
		t.Skip("DWCP_TLS_TARGET is not set: run through tests/test_hardening.py")
	}
	samples := make([]*pb.NetworkSample, 24)
	for i := range samples {
		samples[i] = &pb.NetworkSample{BandwidthMbps: 500, LatencyMs: 20, PacketLoss: 0.001, JitterMs: 2}
	}
	req := &pb.PredictBandwidthRequest{History: &pb.LinkHistory{Samples: samples}}

	good, err := New(WithTarget(target), WithTLS(tlsConfig(t, os.Getenv("DWCP_TLS_CA"))))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := good.PredictBandwidth(context.Background(), req); err != nil {
		t.Fatalf("with the right CA: %v", err)
	}

	bad, err := New(WithTarget(target), WithTLS(tlsConfig(t, os.Getenv("DWCP_TLS_WRONG_CA"))), WithRetries(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, err = bad.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{History: req.History})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("with a wrong CA: got %v, want an error about the certificate", err)
	}
	t.Logf("wrong CA: %v", err)
}
