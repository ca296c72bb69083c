package servertest

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// Server is a dwcp-inference server of one test's own, which the test may kill or stop and start again on
// the same addresses (outage tests). It needs the executable as Target does; with none the test fails with
// the reason.
type Server struct {
	tb        testing.TB
	bin       string
	port      int
	adminPort int      // 0: no admin API
	metrics   int      // the metrics port; 0: none
	flags     []string // serve's flags besides --host and the ports
	proc      *process // nil while the server is down
}

// Start starts a server on the bundled models (no admin API, no rescans) and waits until it is SERVING; it is
// killed when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, false, false, "--poll-seconds", "0")
}

// StartWithAdmin starts a server on the model repository repo, with the admin API on a loopback port of its
// own (AdminAddr, Promote) and rescanning repo every 0.2 s, so that versions the test publishes there and its
// promotes take effect at once; it waits until the server is SERVING and kills it when the test ends. Stop
// gives in-flight calls 5 s to finish.
func StartWithAdmin(tb testing.TB, repo string) *Server {
	tb.Helper()
	return start(tb, true, false, "--repository", repo, "--poll-seconds", "0.2", "--grace-seconds", "5")
}

// StartWithMetrics is Start with the metrics endpoint on a loopback port of its own (Metric).
func StartWithMetrics(tb testing.TB) *Server {
	tb.Helper()
	return start(tb, false, true, "--poll-seconds", "0")
}

// Metric is the value of an unlabelled metric (a gauge such as dwcp_inference_open_watches) the server reports
// now (StartWithMetrics only); the test fails when it cannot be read.
func (s *Server) Metric(name string) float64 {
	s.tb.Helper()
	if s.metrics == 0 {
		s.tb.Fatal("servertest: Metric of a server started without metrics (use StartWithMetrics)")
	}
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(s.metrics) + "/metrics")
	if err != nil {
		s.tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.tb.Fatal(err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if value, found := strings.CutPrefix(line, name+" "); found {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				s.tb.Fatalf("servertest: metric %s: %v", name, err)
			}
			return v
		}
	}
	s.tb.Fatalf("servertest: the server reports no metric %s", name)
	return 0
}

func start(tb testing.TB, admin, metrics bool, flags ...string) *Server {
	tb.Helper()
	s := &Server{tb: tb, bin: Binary(tb), port: FreePort(tb), flags: flags}
	if admin {
		s.adminPort = FreePort(tb)
	}
	if metrics {
		s.metrics = FreePort(tb)
	}
	tb.Cleanup(s.Kill)
	s.Restart()
	return s
}

// Addr is the server's host:port, the same across restarts.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// AdminAddr is the admin API's host:port (StartWithAdmin only), the same across restarts.
func (s *Server) AdminAddr() string {
	if s.adminPort == 0 {
		s.tb.Fatal("servertest: AdminAddr of a server started without an admin API (use StartWithAdmin)")
	}
	return "127.0.0.1:" + strconv.Itoa(s.adminPort)
}

// Promote points the model's label at version through the admin API, failing the test on an error.
func (s *Server) Promote(model, label, version string) {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := pb.NewAdminServiceClient(Dial(s.tb, s.AdminAddr()))
	if _, err := admin.Promote(ctx, &pb.PromoteRequest{Model: model, Label: label, Version: version}); err != nil {
		s.tb.Fatalf("servertest: promoting %s %s to version %s: %v", model, label, version, err)
	}
}

// Kill ends the server at once (SIGKILL: no graceful drain, as a crash) and waits for it to exit.
func (s *Server) Kill() {
	if s.proc != nil {
		s.proc.kill()
		s.proc = nil
	}
}

// Stop shuts the server down as an operator would (SIGTERM: in-flight calls drain) and waits for it to exit,
// killing it after 30 s.
func (s *Server) Stop() {
	if s.proc != nil {
		s.proc.stop(30 * time.Second)
		s.proc = nil
	}
}

// Restart starts the server again on its addresses (after Kill or Stop) and waits until it is SERVING.
func (s *Server) Restart() {
	s.tb.Helper()
	if s.proc != nil {
		s.tb.Fatal("servertest: Restart of a server that is running")
	}
	adminPort := -1
	if s.adminPort != 0 {
		adminPort = s.adminPort
	}
	metricsPort := -1
	if s.metrics != 0 {
		metricsPort = s.metrics
	}
	args := append([]string{"serve", "--host", "127.0.0.1", "--port", strconv.Itoa(s.port),
		"--admin-port", strconv.Itoa(adminPort), "--metrics-host", "127.0.0.1",
		"--metrics-port", strconv.Itoa(metricsPort)}, s.flags...)
	proc, err := launch(s.bin, args, syscall.SIGKILL)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.proc = proc
	if err := proc.waitServing(s.Addr(), 90*time.Second); err != nil {
		s.Kill()
		s.tb.Fatal(err)
	}
}
