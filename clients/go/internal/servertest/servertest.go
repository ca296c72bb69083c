// Package servertest gives the drop-in packages' tests the address of a real inference server.
package servertest

import (
	"fmt"
	"os"
	"testing"
)

// TargetEnv names the server the tests call; tests/test_go_client.py starts one and sets it.
const TargetEnv = "DWCP_INFERENCE_TARGET"

// Main runs the package's tests and examples against the server named by $DWCP_INFERENCE_TARGET. Without it
// they cannot run: it says so and exits 0 (CI runs them through tests/test_go_client.py, which fails if any
// package did not run).
func Main(m *testing.M) {
	if os.Getenv(TargetEnv) == "" {
		fmt.Printf("SKIP: %s is not set; run through tests/test_go_client.py or set it to a running server\n", TargetEnv)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Target is the server's address.
func Target() string { return os.Getenv(TargetEnv) }
