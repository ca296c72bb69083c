package modelsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// fakeDistribution serves one version of "compression_selector" from memory, and can be told to damage it.
type fakeDistribution struct {
	pb.UnimplementedModelDistributionServer
	model, meta []byte
	mu          sync.Mutex
	damage      func(m *pb.VersionManifest, files map[string][]byte) // applied to the next `damaged` calls
	damaged     int
	calls       int
	state       *pb.ModelState
}

const fakeModel = "compression_selector"

func newFake(version string) *fakeDistribution {
	model := []byte("not really onnx, but bytes all the same " + version)
	sum := sha256.Sum256(model)
	meta, _ := json.Marshal(map[string]any{"name": fakeModel, "version": version, "sha256": hex.EncodeToString(sum[:])})
	return &fakeDistribution{model: model, meta: meta, state: &pb.ModelState{Name: fakeModel,
		Versions: []*pb.LoadedVersion{{Version: version, ModelSha256: hex.EncodeToString(sum[:])}},
		Labels:   map[string]string{"stable": version}, Split: map[string]float64{"stable": 1},
		DefaultVersion: version}}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (f *fakeDistribution) GetModel(req *pb.GetModelRequest, stream grpc.ServerStreamingServer[pb.ModelFileChunk]) error {
	f.mu.Lock()
	f.calls++
	damage := f.damage
	if f.damaged <= 0 {
		damage = nil
	}
	f.damaged--
	f.mu.Unlock()
	version := f.state.Versions[0].Version
	files := map[string][]byte{MetadataFile: append([]byte{}, f.meta...), ModelFile: append([]byte{}, f.model...)}
	manifest := &pb.VersionManifest{Model: &pb.ModelRef{Name: fakeModel, Version: version}}
	for _, name := range []string{MetadataFile, ModelFile} {
		manifest.Files = append(manifest.Files, &pb.VersionFile{Name: name, Size: int64(len(files[name])),
			Sha256: digest(files[name])})
	}
	if damage != nil {
		damage(manifest, files)
	}
	if err := stream.Send(&pb.ModelFileChunk{Part: &pb.ModelFileChunk_Manifest{Manifest: manifest}}); err != nil {
		return err
	}
	for _, f := range manifest.Files {
		data := files[f.Name]
		for off := 0; off < len(data); off += 7 { // small chunks: offsets matter
			end := min(off+7, len(data))
			if err := stream.Send(&pb.ModelFileChunk{Part: &pb.ModelFileChunk_Data{Data: &pb.FileData{
				File: f.Name, Offset: int64(off), Data: data[off:end]}}}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *fakeDistribution) WatchModels(req *pb.WatchModelsRequest, stream grpc.ServerStreamingServer[pb.ModelUpdate]) error {
	if err := stream.Send(&pb.ModelUpdate{Models: []*pb.ModelState{f.state}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func serveFake(t *testing.T, f *fakeDistribution) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	pb.RegisterModelDistributionServer(s, f)
	go s.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufnet", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); s.Stop() })
	return conn
}

// onlyVersions lists what a loader would see in dir/<model>: no version, and no staging directory left behind.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(dir, fakeModel))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestFetchVersionRefusesDownloadsThatDoNotCheckOut(t *testing.T) {
	cases := map[string]func(m *pb.VersionManifest, files map[string][]byte){
		"a byte changed in transit": func(m *pb.VersionManifest, files map[string][]byte) {
			files[ModelFile][3] ^= 0xff
		},
		"model.onnx is not the one metadata.json names": func(m *pb.VersionManifest, files map[string][]byte) {
			files[ModelFile] = append(files[ModelFile], '!')
			m.Files[1].Size, m.Files[1].Sha256 = int64(len(files[ModelFile])), digest(files[ModelFile])
		},
		"a file shorter than announced": func(m *pb.VersionManifest, files map[string][]byte) {
			m.Files[1].Size++
		},
		"a file outside the version directory": func(m *pb.VersionManifest, files map[string][]byte) {
			m.Files[0].Name = "../" + fakeModel + ".json"
		},
		"metadata.json of another version": func(m *pb.VersionManifest, files map[string][]byte) {
			m.Model.Version = "8"
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFake("7")
			f.damage, f.damaged = damage, 1
			dir := t.TempDir()
			_, err := FetchVersion(context.Background(), serveFake(t, f), dir, fakeModel, nil)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("FetchVersion = %v, want ErrCorrupt", err)
			}
			if got := entries(t, dir); len(got) != 0 {
				t.Fatalf("a refused download left %v in the repository", got)
			}
			if _, err := os.Stat(filepath.Join(dir, fakeModel+".json")); err == nil {
				t.Fatal("a file was written outside the version directory")
			}
		})
	}
}

func TestFetchVersionInstallsAVerifiedVersion(t *testing.T) {
	f := newFake("7")
	dir := t.TempDir()
	ref, err := FetchVersion(context.Background(), serveFake(t, f), dir, fakeModel, &pb.ModelSelector{Label: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	if ref.GetVersion() != "7" {
		t.Fatalf("version %q, want 7", ref.GetVersion())
	}
	got, err := os.ReadFile(filepath.Join(dir, fakeModel, "7", ModelFile))
	if err != nil || string(got) != string(f.model) {
		t.Fatalf("model.onnx = %q, %v", got, err)
	}
	if es := entries(t, dir); len(es) != 1 || es[0] != "7" {
		t.Fatalf("repository holds %v, want only the version", es)
	}
}

func TestSyncRefusesACorruptDownloadThenInstallsTheGoodOne(t *testing.T) {
	f := newFake("7")
	f.damage, f.damaged = func(m *pb.VersionManifest, files map[string][]byte) { files[ModelFile][0] ^= 1 }, 2
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	events := make(chan Event, 64)
	done := make(chan error, 1)
	go func() {
		done <- Sync(ctx, serveFake(t, f), dir, WithBackoff(time.Millisecond, 10*time.Millisecond),
			WithEvents(func(e Event) { events <- e }))
	}()
	var refused int
	for e := range events {
		if e.Kind == Disconnected {
			if !errors.Is(e.Err, ErrCorrupt) {
				t.Fatalf("disconnected by %v, want ErrCorrupt", e.Err)
			}
			if es := entries(t, dir); len(es) != 0 {
				t.Fatalf("a corrupt download is visible: %v", es)
			}
			refused++
		}
		if e.Kind == PolicyWritten {
			break
		}
	}
	cancel()
	<-done
	if refused != 2 {
		t.Fatalf("%d downloads refused, want 2", refused)
	}
	model, _ := os.ReadFile(filepath.Join(dir, fakeModel, "7", ModelFile))
	if string(model) != string(f.model) {
		t.Fatal("the installed model.onnx is not the server's")
	}
	var p map[string]any
	raw, _ := os.ReadFile(filepath.Join(dir, fakeModel, PolicyFile))
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	want := `{"disabled":[],"history":{},"keep_latest":1,"labels":{"stable":"7"},"pinned":[],"split":{"stable":1}}`
	if got, _ := json.Marshal(p); string(got) != want {
		t.Fatalf("policy.json = %s, want %s", got, want)
	}
}
