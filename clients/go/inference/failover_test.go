package inference

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// FailoverEnv lists the servers of TestFailover as "addr|pid|metricsURL", comma-separated;
// tests/test_failover.py starts three and sets it.
const FailoverEnv = "DWCP_FAILOVER_SERVERS"

type server struct {
	addr, metrics string
	pid           int
}

func failoverServers(t *testing.T) []server {
	spec := os.Getenv(FailoverEnv)
	if spec == "" {
		t.Skipf("%s is not set: run through tests/test_failover.py", FailoverEnv)
	}
	var out []server
	for _, item := range strings.Split(spec, ",") {
		parts := strings.Split(item, "|")
		pid, _ := strconv.Atoi(parts[1])
		out = append(out, server{addr: parts[0], pid: pid, metrics: parts[2]})
	}
	return out
}

var okCalls = regexp.MustCompile(`dwcp_inference_requests_total\{code="OK",rpc="PredictBandwidth"\} ([0-9.e+]+)`)

func answered(t *testing.T, url string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := okCalls.FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestFailover balances over three real servers, kills one with SIGKILL under load, and expects no failed call.
func TestFailover(t *testing.T) {
	servers := failoverServers(t)
	r := manual.NewBuilderWithScheme("failover")
	var addrs []resolver.Address
	for _, s := range servers {
		addrs = append(addrs, resolver.Address{Addr: s.addr})
	}
	r.InitialState(resolver.State{Addresses: addrs})
	c, err := New(WithTarget("failover:///servers"), WithRetries(5, 20*time.Millisecond),
		WithTimeout(5*time.Second), WithDialOptions(grpc.WithResolvers(r)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	samples := make([]*pb.NetworkSample, 24)
	for i := range samples {
		samples[i] = &pb.NetworkSample{BandwidthMbps: 500, LatencyMs: 20, PacketLoss: 0.001, JitterMs: 2, TimeOfDay: 10, DayOfWeek: 2}
	}
	req := &pb.PredictBandwidthRequest{History: &pb.LinkHistory{Samples: samples}}

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	load := func(stop <-chan struct{}, wg *sync.WaitGroup) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.PredictBandwidth(context.Background(), &pb.PredictBandwidthRequest{History: req.History}); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go load(stop, &wg)
	}
	time.Sleep(1500 * time.Millisecond)
	before := ok.Load()
	for _, s := range servers {
		if n := answered(t, s.metrics); n == 0 {
			t.Errorf("server %s took no traffic before the kill", s.addr)
		} else {
			t.Logf("server %s answered %.0f calls before the kill", s.addr, n)
		}
	}
	if err := syscall.Kill(servers[0].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	after := ok.Load() - before
	t.Logf("failover: %d calls before the kill, %d after, %d failed", before, after, failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed, first: %v", failed.Load(), firstErr.Load())
	}
	if after < 100 {
		t.Fatalf("only %d calls after the kill", after)
	}
}
