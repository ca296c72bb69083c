package servertest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Server is a dwcp-inference server of one test's own, on the bundled models, that the test may kill and
// start again on the same address (outage tests). It needs the executable as Target does; with none the test
// fails with the reason.
type Server struct {
	tb   testing.TB
	bin  string
	port int
	cmd  *exec.Cmd
	done chan error
	logs bytes.Buffer
}

// Start starts a server for t and waits until it is SERVING; it is stopped when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin, err := binary()
	if err != nil {
		tb.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{tb: tb, bin: bin, port: port}
	tb.Cleanup(s.Kill)
	s.Restart()
	return s
}

// Addr is the server's host:port, the same across restarts.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Kill ends the server at once (SIGKILL: no graceful drain) and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on its address (after Kill) and waits until it is SERVING.
func (s *Server) Restart() {
	s.tb.Helper()
	if s.cmd != nil {
		s.tb.Fatal("servertest: Restart of a server that is running")
	}
	s.logs.Reset()
	cmd := exec.Command(s.bin, "serve", "--host", "127.0.0.1", "--port", strconv.Itoa(s.port), "--metrics-port",
		"-1", "--admin-port", "-1", "--poll-seconds", "0")
	cmd.Stdout, cmd.Stderr = &s.logs, &s.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("servertest: starting %s: %v", s.bin, err)
	}
	s.cmd, s.done = cmd, make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	if err := s.waitServing(90 * time.Second); err != nil {
		s.Kill()
		s.tb.Fatalf("%v\n%s", err, s.logs.String())
	}
}

func (s *Server) waitServing(within time.Duration) error {
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("servertest: %s serve exited (%v)", s.bin, err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
	}
	return fmt.Errorf("servertest: %s serve was not SERVING on %s within %v", s.bin, s.Addr(), within)
}
