package embedded

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/servertest"
	"github.com/dwcp/inference/clients/go/modelsync"
)

// serviceRequests are one request per model.
func serviceRequests() []proto.Message {
	reqs := benchRequests()
	bandwidth := reqs["PredictBandwidth"].(*pb.PredictBandwidthRequest)
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC) // valid_until is the last sample's time plus the horizon
	for i, s := range bandwidth.GetHistory().GetSamples() {
		s.Timestamp = timestamppb.New(start.Add(time.Duration(i) * 5 * time.Second))
	}
	return []proto.Message{bandwidth, reqs["SelectCompression/traits"], reqs["DetectAnomaly"],
		reqs["DetectHighLatency"]}
}

// sameAsServer fails the test unless rt answers every request as the server does (the version included).
func sameAsServer(t *testing.T, rt *Runtime, server pb.InferenceServiceClient) {
	t.Helper()
	for _, req := range serviceRequests() {
		got, err := call(context.Background(), rt, req)
		if err != nil {
			t.Fatalf("%T: embedded: %v", req, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		want, err := remote(ctx, server, req)
		cancel()
		if err != nil {
			t.Fatalf("%T: server: %v", req, err)
		}
		if diff := differences(fmt.Sprintf("%T", got), got.ProtoReflect(), want.ProtoReflect()); len(diff) > 0 {
			t.Fatalf("%T answered differently (embedded vs server):\n%s", req, strings.Join(diff, "\n"))
		}
	}
}

func answeringVersion(t *testing.T, rt *Runtime, req proto.Message) string {
	t.Helper()
	resp, err := call(context.Background(), rt, req)
	if err != nil {
		t.Fatal(err)
	}
	return modelOf(resp).GetVersion()
}

// A process that names only the service and a cache directory runs the service's versions in-process: the
// same answers and versions as the server, a promote followed, the server killed and the process restarted
// with it still down.
func TestFromServiceFollowsTheServiceAndOutlivesIt(t *testing.T) {
	repo := copyRepo(t)
	publish(t, repo, CompressionModel, "2", nil) // the server answers with 2, the highest
	server := servertest.StartWithAdmin(t, repo)
	conn := servertest.Dial(t, server.Addr())
	inferenceClient := pb.NewInferenceServiceClient(conn)
	cache := filepath.Join(t.TempDir(), "cache")
	fast := WithSyncOptions(modelsync.WithBackoff(20*time.Millisecond, 200*time.Millisecond))

	rt, err := FromService(context.Background(), conn, cache, fast, WithSyncWait(90*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	selector := serviceRequests()[1]
	if v := answeringVersion(t, rt, selector); v != "2" {
		t.Fatalf("embedded answers with compression_selector version %s, want the server's 2", v)
	}
	sameAsServer(t, rt, inferenceClient)

	server.Promote(CompressionModel, "stable", "1")
	servertest.Eventually(t, "the promote of version 1 answering in-process", func() bool {
		return answeringVersion(t, rt, selector) == "1"
	})
	sameAsServer(t, rt, inferenceClient)

	server.Kill()
	for i := 0; i < 20; i++ { // the sync is reconnecting meanwhile
		if v := answeringVersion(t, rt, selector); v != "1" {
			t.Fatalf("with the server down, embedded answers with version %s, want 1", v)
		}
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}

	// The process again, the server still down: the cache is a repository with the service's policy.
	again, err := FromService(context.Background(), servertest.Dial(t, server.Addr()), cache, fast,
		WithSyncWait(90*time.Second))
	if err != nil {
		t.Fatalf("a fresh runtime on the cache with the service down: %v", err)
	}
	defer again.Close()
	for _, req := range serviceRequests() {
		if _, err := call(context.Background(), again, req); err != nil {
			t.Fatalf("%T from the cache: %v", req, err)
		}
	}
	if v := answeringVersion(t, again, selector); v != "1" {
		t.Fatalf("from the cache, version %s answers; want 1 (stable on the service)", v)
	}
	plain := open(t, cache)
	if v := answeringVersion(t, plain, selector); v != "1" {
		t.Fatalf("embedded.Open on the cache answers with version %s, want 1", v)
	}
}

// With the service unreachable and nothing cached, FromService says which models are missing and why.
func TestFromServiceNamesWhatIsMissing(t *testing.T) {
	needLibrary(t)
	conn := servertest.Dial(t, "127.0.0.1:"+strconv.Itoa(servertest.FreePort(t))) // nothing listens there
	cache := t.TempDir()
	_, err := FromService(context.Background(), conn, cache, WithModels(CompressionModel, AnomalyModel),
		WithSyncWait(2*time.Second))
	if err == nil {
		t.Fatal("FromService returned a runtime with nothing synced")
	}
	for _, want := range []string{CompressionModel, AnomalyModel, "within 2s", "last error"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), BandwidthModel) {
		t.Errorf("the error names a model not asked for: %v", err)
	}
	if _, err := FromService(context.Background(), conn, cache, WithModels("bandwidth")); err == nil ||
		!strings.Contains(err.Error(), `"bandwidth"`) {
		t.Errorf("an unknown model name: %v", err)
	}
	// WithServeBeforeSync: a runtime that answers not-loaded (the chain's cue to ask the service) for now.
	rt, err := FromService(context.Background(), conn, cache, WithModels(CompressionModel),
		WithSyncWait(200*time.Millisecond), WithServeBeforeSync())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	if _, err := call(context.Background(), rt, serviceRequests()[1]); err == nil {
		t.Fatal("a runtime with nothing synced answered")
	} else if reason, ok := inference.CannotAnswerHere(err); !ok || reason != "not_loaded" {
		t.Fatalf("nothing synced yet: %v (a chain would not move on: %q)", err, reason)
	}
}

// Runtimes on one connection and cache directory share one watch of the service; one that joins a sync already
// up to date opens on what it applied (the watch, quiet while nothing changes, will not tell it again). The
// watch ends with the last runtime's Close.
func TestFromServiceRuntimesOnOneConnAndCacheShareOneWatch(t *testing.T) {
	needLibrary(t)
	server := servertest.StartWithMetrics(t)
	watches := func(n float64) func() bool {
		return func() bool { return server.Metric("dwcp_inference_open_watches") == n }
	}
	conn, cache := servertest.Dial(t, server.Addr()), t.TempDir()
	first, err := FromService(context.Background(), conn, cache, WithModels(CompressionModel))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // for ever, were it to wait for news
	defer cancel()
	second, err := FromService(ctx, conn, cache, WithModels(CompressionModel), WithSyncWait(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, "one watch for two runtimes", watches(1))
	if _, err := call(context.Background(), second, serviceRequests()[1]); err != nil {
		t.Fatal(err)
	}
	first.Close()
	if n := server.Metric("dwcp_inference_open_watches"); n != 1 {
		t.Fatalf("%v watches with one runtime still open, want 1", n)
	}
	second.Close()
	servertest.Eventually(t, "no watch once the last runtime is closed", watches(0))
}
