package servertest

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// process is one `dwcp-inference serve` run: Target's shared server and each Server's.
type process struct {
	bin    string
	cmd    *exec.Cmd
	exited chan error // receives the exit once; put back by whoever reads it early
	logs   lockedBuffer
}

// launch starts bin with args; deathSignal is what the server gets should the test binary die first.
func launch(bin string, args []string, deathSignal syscall.Signal) (*process, error) {
	p := &process{bin: bin, exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: deathSignal}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("servertest: starting %s: %w", bin, err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

// waitServing waits until the server on addr answers SERVING, failing (with its output) when it exits or
// does not within the given time.
func (p *process) waitServing(addr string, within time.Duration) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case err := <-p.exited:
			p.exited <- err
			return fmt.Errorf("servertest: %s serve exited (%v):\n%s", p.bin, err, p.logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
	}
	return fmt.Errorf("servertest: %s serve was not SERVING on %s within %v:\n%s", p.bin, addr, within,
		p.logs.String())
}

// kill ends the server at once (SIGKILL: no drain, as a crash) and waits for it to exit.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// stop asks the server to drain and exit (SIGTERM) and waits, killing it after patience.
func (p *process) stop(patience time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(patience):
		p.kill()
	}
}

// lockedBuffer is the server's output, written by exec's copying goroutines while a failing test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
