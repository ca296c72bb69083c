package modelsync

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

func TestMain(m *testing.M) { servertest.Main(m) }

var models = []string{"bandwidth_predictor", "compression_selector", "consensus_latency", "reliability_detector"}

// The server servertest gives every Go test: a one-shot pull gives a version that verifies.
func TestFetchVersionFromTheServer(t *testing.T) {
	conn := servertest.Dial(t, servertest.Target(t))
	dir := t.TempDir()
	for _, model := range models {
		ref, err := FetchVersion(context.Background(), conn, dir, model, nil)
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		if err := checkMetadata(filepath.Join(dir, model, ref.GetVersion()), model, ref.GetVersion()); err != nil {
			t.Fatal(err)
		}
	}
	_, err := FetchVersion(context.Background(), conn, dir, "compression_selector", &pb.ModelSelector{Version: "999"})
	if err == nil {
		t.Fatal("version 999 fetched")
	}
}

// bundledModels copies the repository's bundled models (dwcp_inference/models) to a temporary directory.
func bundledModels(t *testing.T) string {
	for d, _ := os.Getwd(); filepath.Dir(d) != d; d = filepath.Dir(d) {
		if src := filepath.Join(d, "dwcp_inference", "models"); isDir(src) {
			dst := filepath.Join(t.TempDir(), "repo")
			if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
				t.Fatal(err)
			}
			return dst
		}
	}
	t.Fatal("no dwcp_inference/models above this directory")
	return ""
}

// publishCopy publishes version `source` of compression_selector again as `version`, as export/publish.py does:
// a staging directory, then a rename.
func publishCopy(t *testing.T, repo, source, version string) {
	model := filepath.Join(repo, "compression_selector")
	staging := filepath.Join(model, ".staging-"+version)
	if err := os.CopyFS(staging, os.DirFS(filepath.Join(model, source))); err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	raw, _ := os.ReadFile(filepath.Join(staging, MetadataFile))
	if err := json.Unmarshal(raw, &meta); err != nil {
		t.Fatal(err)
	}
	meta["version"] = version
	raw, _ = json.Marshal(meta)
	if err := os.WriteFile(filepath.Join(staging, MetadataFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staging, filepath.Join(model, version)); err != nil {
		t.Fatal(err)
	}
}

func TestSyncFollowsTheServerAcrossPromotesPublishesAndRestarts(t *testing.T) {
	repo := bundledModels(t)
	server := servertest.StartWithAdmin(t, repo) // its repository changes: a server of its own
	local := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Sync(ctx, servertest.Dial(t, server.Addr()), local, WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	}()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Sync returned %v, want context.Canceled", err)
		}
	}()

	for _, model := range models {
		servertest.Eventually(t, model+" synced", func() bool { return sameVersion(t, repo, local, model, "1") })
	}
	server.Promote("compression_selector", "stable", "1")
	servertest.Eventually(t, "the promote in policy.json", func() bool {
		return localPolicy(t, local).Labels["stable"] == "1"
	})

	publishCopy(t, repo, "1", "2")
	servertest.Eventually(t, "the published version", func() bool {
		return sameVersion(t, repo, local, "compression_selector", "2")
	})
	servertest.Eventually(t, "policy.json keeps both versions", func() bool {
		return localPolicy(t, local).KeepLatest == 2
	})

	server.Stop() // the watch ends; Sync reconnects with backoff until the server is back
	publishCopy(t, repo, "1", "3")
	server.Restart()
	servertest.Eventually(t, "a version published while the server was down", func() bool {
		return sameVersion(t, repo, local, "compression_selector", "3")
	})
	server.Promote("compression_selector", "canary", "3")
	servertest.Eventually(t, "a promote after the restart", func() bool {
		return localPolicy(t, local).Labels["canary"] == "3"
	})
	for _, leftover := range []string{".fetch-*", ".replaced-*", ".removed-*", ".policy-*"} {
		if m, _ := filepath.Glob(filepath.Join(local, "*", leftover)); len(m) > 0 {
			t.Errorf("left behind: %v", m)
		}
	}
	// The server's own loader, on the synced directory, loads what the server has loaded: the policy.json files
	// validate and keep every synced version.
	out, err := exec.Command(servertest.Binary(t), "verify", "--repository", local).Output()
	if err != nil {
		t.Fatalf("dwcp-inference verify on the synced directory: %v\n%s", err, out)
	}
	var verified struct {
		Loaded  map[string][]string `json:"loaded"`
		Refused []any               `json:"refused"`
	}
	if err := json.Unmarshal(out, &verified); err != nil {
		t.Fatal(err)
	}
	want := `{"bandwidth_predictor":["1"],"compression_selector":["1","2","3"],"consensus_latency":["1"],` +
		`"reliability_detector":["1"]}`
	if got, _ := json.Marshal(verified.Loaded); string(got) != want || len(verified.Refused) != 0 {
		t.Fatalf("verify loaded %s, refused %v; want %s", got, verified.Refused, want)
	}
}

// sameVersion: local holds the version with exactly the repository's files.
func sameVersion(t *testing.T, repo, local, model, version string) bool {
	for _, name := range []string{MetadataFile, ModelFile} {
		want, err := os.ReadFile(filepath.Join(repo, model, version, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(local, model, version, name))
		if err != nil || !bytes.Equal(got, want) {
			return false
		}
	}
	return true
}

func localPolicy(t *testing.T, local string) policy {
	var p policy
	raw, err := os.ReadFile(filepath.Join(local, "compression_selector", PolicyFile))
	if err == nil {
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatalf("policy.json: %v", err)
		}
	}
	return p
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
