package modelsync

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/servertest"
)

func TestMain(m *testing.M) { servertest.Main(m) }

var models = []string{"bandwidth_predictor", "compression_selector", "consensus_latency", "reliability_detector"}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// The server servertest gives every Go test: a one-shot pull gives a version that verifies.
func TestFetchVersionFromTheServer(t *testing.T) {
	conn := dial(t, servertest.Target(t))
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

// A server of our own (servertest's polls nothing and has no admin port): a copy of the bundled models that the
// test changes, rescanned every 0.2 s, on a fixed port so that it can be restarted.
type ownServer struct {
	t               *testing.T
	repo, addr      string
	port, adminPort int
	cmd             *exec.Cmd
	exited          chan error
	logs            bytes.Buffer
}

func startOwnServer(t *testing.T, repo string) *ownServer {
	s := &ownServer{t: t, repo: repo, port: freePort(t), adminPort: freePort(t)}
	s.addr = "127.0.0.1:" + strconv.Itoa(s.port)
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *ownServer) start() {
	t := s.t
	t.Helper()
	s.cmd = exec.Command(binary(t), "serve", "--repository", s.repo, "--host", "127.0.0.1",
		"--port", strconv.Itoa(s.port), "--admin-port", strconv.Itoa(s.adminPort), "--metrics-port", "-1",
		"--poll-seconds", "0.2", "--grace-seconds", "5")
	s.logs.Reset()
	s.cmd.Stdout, s.cmd.Stderr = &s.logs, &s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan error, 1)
	go func() { s.exited <- s.cmd.Wait() }()
	health := healthpb.NewHealthClient(dial(t, s.addr))
	eventually(t, "the server serving", func() bool {
		select {
		case err := <-s.exited:
			t.Fatalf("dwcp-inference serve exited (%v):\n%s", err, s.logs.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
}

func (s *ownServer) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

func (s *ownServer) promote(label, version string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := pb.NewAdminServiceClient(dial(s.t, "127.0.0.1:"+strconv.Itoa(s.adminPort)))
	if _, err := admin.Promote(ctx, &pb.PromoteRequest{Model: "compression_selector", Label: label,
		Version: version}); err != nil {
		s.t.Fatal(err)
	}
}

// binary is $DWCP_INFERENCE_BIN, or the repository's .venv/bin/dwcp-inference (as servertest finds it).
func binary(t *testing.T) string {
	if b := os.Getenv(servertest.BinaryEnv); b != "" {
		return b
	}
	for d, _ := os.Getwd(); filepath.Dir(d) != d; d = filepath.Dir(d) {
		if b := filepath.Join(d, ".venv", "bin", "dwcp-inference"); isFile(b) {
			return b
		}
	}
	t.Fatalf("these tests start dwcp-inference serve: set %s, or create the repository's .venv (make test)",
		servertest.BinaryEnv)
	return ""
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
	server := startOwnServer(t, repo)
	local := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Sync(ctx, dial(t, server.addr), local, WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	}()
	defer func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Sync returned %v, want context.Canceled", err)
		}
	}()

	for _, model := range models {
		eventually(t, model+" synced", func() bool { return sameVersion(t, repo, local, model, "1") })
	}
	server.promote("stable", "1")
	eventually(t, "the promote in policy.json", func() bool {
		return localPolicy(t, local).Labels["stable"] == "1"
	})

	publishCopy(t, repo, "1", "2")
	eventually(t, "the published version", func() bool { return sameVersion(t, repo, local, "compression_selector", "2") })
	eventually(t, "policy.json keeps both versions", func() bool { return localPolicy(t, local).KeepLatest == 2 })

	server.stop() // the watch ends; Sync reconnects with backoff until the server is back
	publishCopy(t, repo, "1", "3")
	server.start()
	eventually(t, "a version published while the server was down", func() bool {
		return sameVersion(t, repo, local, "compression_selector", "3")
	})
	server.promote("canary", "3")
	eventually(t, "a promote after the restart", func() bool { return localPolicy(t, local).Labels["canary"] == "3" })
	for _, leftover := range []string{".fetch-*", ".replaced-*", ".removed-*", ".policy-*"} {
		if m, _ := filepath.Glob(filepath.Join(local, "*", leftover)); len(m) > 0 {
			t.Errorf("left behind: %v", m)
		}
	}
	// The server's own loader, on the synced directory, loads what the server has loaded: the policy.json files
	// validate and keep every synced version.
	out, err := exec.Command(binary(t), "verify", "--repository", local).Output()
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

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
