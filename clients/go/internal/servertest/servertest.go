// Package servertest gives the tests that need a real inference server its address: the server named by
// $DWCP_INFERENCE_TARGET, or else one it starts on the bundled models from `dwcp-inference serve` (the binary
// named by $DWCP_INFERENCE_BIN, or the repository's .venv/bin/dwcp-inference). Without either, the test fails
// with a message saying so; it never skips. A test that changes its server (kills it, publishes into its
// repository, promotes through its admin API) starts one of its own: Start, StartWithAdmin.
package servertest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TargetEnv names a running server the tests call; tests/test_go_client.py starts one and sets it.
const TargetEnv = "DWCP_INFERENCE_TARGET"

// BinaryEnv names the dwcp-inference executable to start when TargetEnv is unset.
const BinaryEnv = "DWCP_INFERENCE_BIN"

var (
	once    sync.Once
	target  string
	failure error
	server  *process // the server Target started, if any
)

// Main runs the package's tests and stops the server Target started, if any.
func Main(m *testing.M) {
	code := m.Run()
	if server != nil {
		server.stop(15 * time.Second)
	}
	os.Exit(code)
}

// Target returns a serving server's address, starting one the first time it is needed. It fails tb (or, for
// an example, which has none, panics) with the reason when there is no server to be had.
func Target(tb testing.TB) string {
	once.Do(func() { target, failure = findOrStart() })
	if failure != nil {
		if tb == nil {
			panic(failure)
		}
		tb.Helper()
		tb.Fatal(failure)
	}
	return target
}

func findOrStart() (string, error) {
	if t := os.Getenv(TargetEnv); t != "" {
		return t, nil
	}
	bin, err := binary()
	if err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	proc, err := launch(bin, []string{"serve", "--host", "127.0.0.1", "--port", strconv.Itoa(port),
		"--metrics-port", "-1", "--admin-port", "-1", "--poll-seconds", "0"},
		syscall.SIGTERM) // never outlives the test binary
	if err != nil {
		return "", err
	}
	if err := proc.waitServing(addr, 90*time.Second); err != nil {
		proc.stop(15 * time.Second)
		return "", err
	}
	server = proc
	return addr, nil
}

// Binary is the dwcp-inference executable (as Target finds it), for a test that runs its other commands; the
// test fails saying what to set when there is none.
func Binary(tb testing.TB) string {
	tb.Helper()
	bin, err := binary()
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

// binary is $DWCP_INFERENCE_BIN, or .venv/bin/dwcp-inference in a directory above this one.
func binary() (string, error) {
	if b := os.Getenv(BinaryEnv); b != "" {
		return b, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b := filepath.Join(d, ".venv", "bin", "dwcp-inference"); isFile(b) {
			return b, nil
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return "", fmt.Errorf("servertest: these tests need an inference server: set %s to a running one, or %s to "+
		"a dwcp-inference executable, or create the repository's .venv (make test)", TargetEnv, BinaryEnv)
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
