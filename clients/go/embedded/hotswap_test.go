package embedded

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// publish copies version 1 of the model as version ver through a staging directory and a rename, as a publisher
// does; edit may change the staged copy first.
func publish(t *testing.T, repo, model, ver string, edit func(dir string)) {
	t.Helper()
	staging := filepath.Join(repo, model, ".staging-"+ver)
	copyDir(t, filepath.Join(repo, model, "1"), staging)
	editMetadata(t, staging, func(m map[string]any) { m["version"] = ver })
	if edit != nil {
		edit(staging)
	}
	if err := os.Rename(staging, filepath.Join(repo, model, ver)); err != nil {
		t.Fatal(err)
	}
}

func writePolicy(t *testing.T, repo, model, text string) {
	t.Helper()
	tmp := filepath.Join(repo, model, ".policy.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(repo, model, policyFile)); err != nil {
		t.Fatal(err)
	}
}

// Hot swap with no failed call: callers in several goroutines keep calling while versions are added, promoted,
// corrupted and unloaded; every call succeeds and the answers follow the version the policy chooses.
func TestHotSwapWithNoFailedCall(t *testing.T) {
	repo := copyRepo(t, CompressionModel)
	var mu sync.Mutex
	var events []string
	r := open(t, repo, WithPollInterval(10*time.Millisecond), WithEventHandler(func(e Event) {
		mu.Lock()
		events = append(events, e.String())
		mu.Unlock()
	}))
	var calls, failures atomic.Int64
	var last [8]atomic.Value // the version each caller saw last
	seen := sync.Map{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < len(last); g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			req := &pb.SelectCompressionRequest{
				Link:    &pb.LinkState{ThroughputMbps: 100, RttMs: 40, LinkType: pb.LinkType_LINK_TYPE_WAN},
				Payload: &pb.PayloadTraits{SizeBytes: 1 << 20, Sample: []byte(strings.Repeat("hot swap ", 400))}}
			batch := &pb.SelectCompressionBatchRequest{Queries: []*pb.CompressionQuery{
				{Link: req.Link, Payload: req.Payload}, {Link: req.Link, Payload: req.Payload}}}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var ver string
				if i%4 == 0 {
					resp, err := r.SelectCompressionBatch(context.Background(), batch)
					if err != nil {
						failures.Add(1)
						t.Errorf("call failed: %v", err)
						continue
					}
					ver = resp.GetModel().GetVersion()
				} else {
					resp, err := r.SelectCompression(context.Background(), req)
					if err != nil {
						failures.Add(1)
						t.Errorf("call failed: %v", err)
						continue
					}
					ver = resp.GetModel().GetVersion()
				}
				calls.Add(1)
				last[g].Store(ver)
				seen.Store(ver, true)
			}
		}(g)
	}
	// waitFor waits until every caller's latest answer came from version ver.
	waitFor := func(ver, why string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			all := true
			before := calls.Load()
			time.Sleep(30 * time.Millisecond)
			for g := range last {
				if v, _ := last[g].Load().(string); v != ver {
					all = false
				}
			}
			if all && calls.Load() > before+int64(len(last)) {
				return
			}
		}
		t.Fatalf("%s: answers did not come from version %s within 20 s", why, ver)
	}
	waitFor("1", "the first version")

	publish(t, repo, CompressionModel, "2", nil)
	waitFor("2", "a newer version published")

	writePolicy(t, repo, CompressionModel, `{"labels": {"stable": "1"}}`)
	waitFor("1", "version 1 promoted to stable")

	publish(t, repo, CompressionModel, "3", func(dir string) { // a corrupt model: its checksum fails
		os.WriteFile(filepath.Join(dir, modelFile), []byte("not an onnx model"), 0o644)
	})
	writePolicy(t, repo, CompressionModel, `{"keep_latest": 2}`) // highest valid version: 2, not the corrupt 3
	waitFor("2", "the policy's default after a corrupt version 3 was dropped in")
	if reason := refusalOf(r.Status(), CompressionModel, "3"); !strings.Contains(reason, "sha256") {
		t.Fatalf("version 3 refusal: %q", reason)
	}

	// Version 2's files corrupted in place: the copy already loaded keeps serving.
	os.WriteFile(filepath.Join(repo, CompressionModel, "2", modelFile), []byte("garbage"), 0o644)
	r.Reload()
	time.Sleep(100 * time.Millisecond)
	waitFor("2", "version 2 corrupted in place")

	// Version 2 disabled while the callers use it: they move to 1, and 2's session is freed once its calls end.
	inUse := r.snap.Load().models[CompressionModel].versions["2"]
	writePolicy(t, repo, CompressionModel, `{"disabled": ["2"]}`)
	waitFor("1", "version 2 disabled")
	deadline := time.Now().Add(10 * time.Second)
	for !isClosed(inUse) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !isClosed(inUse) {
		t.Fatal("version 2's session was not freed after it was unloaded")
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	_, saw1 := seen.Load("1")
	_, saw2 := seen.Load("2")
	_, saw3 := seen.Load("3")
	if failures.Load() != 0 || !saw1 || !saw2 || saw3 {
		t.Fatalf("%d calls, %d failed; versions seen 1 %v, 2 %v, 3 %v", calls.Load(), failures.Load(), saw1, saw2, saw3)
	}
	t.Logf("%d calls, none failed; events: %s", calls.Load(), strings.Join(events, "; "))
}

func isClosed(v *version) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.closed
}
