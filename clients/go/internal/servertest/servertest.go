// Package servertest gives the tests that need a real inference server its address: the server named by
// $DWCP_INFERENCE_TARGET, or else one it starts on the bundled models from `dwcp-inference serve` (the binary
// named by $DWCP_INFERENCE_BIN, or the repository's .venv/bin/dwcp-inference). Without either, the test fails
// with a message saying so; it never skips.
package servertest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TargetEnv names a running server the tests call; tests/test_go_client.py starts one and sets it.
const TargetEnv = "DWCP_INFERENCE_TARGET"

// BinaryEnv names the dwcp-inference executable to start when TargetEnv is unset.
const BinaryEnv = "DWCP_INFERENCE_BIN"

var (
	once    sync.Once
	target  string
	failure error
	server  *exec.Cmd
	exited  chan error // receives the server's exit
)

// Main runs the package's tests and stops the server Target started, if any.
func Main(m *testing.M) {
	code := m.Run()
	stop()
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
	var logs bytes.Buffer
	cmd := exec.Command(bin, "serve", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--metrics-port", "-1",
		"--admin-port", "-1", "--poll-seconds", "0")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // never outlives the test binary
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("servertest: starting %s: %w", bin, err)
	}
	server, exited = cmd, make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			server = nil
			return "", fmt.Errorf("servertest: %s serve exited (%v):\n%s", bin, err, logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return addr, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	stop()
	return "", fmt.Errorf("servertest: %s serve was not SERVING on %s within 90 s:\n%s", bin, addr, logs.String())
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func stop() {
	if server == nil || server.Process == nil {
		return
	}
	server.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		server.Process.Kill()
		<-exited
	}
	server = nil
}
