// Package modelsync keeps a local model repository, in the server's layout
// (<dir>/<model>/<version>/{model.onnx,metadata.json} and <dir>/<model>/policy.json), in step with an inference
// server's ModelDistribution service, so a process can run the same versions in-process (clients/go/embedded
// loads and polls such a directory). No cgo.
//
// A version is fetched into a hidden directory beside its target (<dir>/<model>/.fetch-*, which loaders skip),
// every file checked against the manifest's sha256 and model.onnx against metadata.json's sha256, then renamed
// into place: a half-written or corrupt version is never visible. policy.json is replaced atomically too.
package modelsync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/layout"
)

const (
	// ModelFile and MetadataFile are the files every version directory holds.
	ModelFile    = layout.ModelFile
	MetadataFile = layout.MetadataFile
	// PolicyFile is each model's policy (services/policy.py's format).
	PolicyFile    = layout.PolicyFile
	stagingPrefix = ".fetch-"
)

// ErrCorrupt wraps every refusal of a download that does not check out (sizes, checksums, names, metadata).
var ErrCorrupt = errors.New("modelsync: corrupt download")

// FetchVersion pulls one version of model (the one selector picks; nil: the server's default) into
// dir/<model>/<version>, verified, and returns the version the server chose. An existing directory for that
// version is left as it is when its files verify, and replaced otherwise.
func FetchVersion(ctx context.Context, conn grpc.ClientConnInterface, dir, model string,
	selector *pb.ModelSelector) (*pb.ModelRef, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewModelDistributionClient(conn).GetModel(ctx,
		&pb.GetModelRequest{Model: model, Selector: selector})
	if err != nil {
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	manifest := first.GetManifest()
	if manifest == nil || manifest.GetModel().GetName() != model || !layout.IsVersion(manifest.GetModel().GetVersion()) {
		return nil, fmt.Errorf("%w: %s: the stream did not start with a manifest of this model", ErrCorrupt, model)
	}
	ref := manifest.GetModel()
	target := filepath.Join(dir, model, ref.GetVersion())
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(filepath.Dir(target), stagingPrefix+ref.GetVersion()+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging) // gone once renamed into place
	if err := receive(stream, manifest, staging); err != nil {
		return nil, fmt.Errorf("%s version %s: %w", model, ref.GetVersion(), err)
	}
	if err := checkMetadata(staging, model, ref.GetVersion()); err != nil {
		return nil, fmt.Errorf("%s version %s: %w", model, ref.GetVersion(), err)
	}
	if err := install(staging, target); err != nil {
		return nil, err
	}
	return ref, nil
}

// receive writes the manifest's files from the stream into staging, checking names, offsets, sizes and sha256.
func receive(stream grpc.ServerStreamingClient[pb.ModelFileChunk], manifest *pb.VersionManifest, staging string) error {
	type file struct {
		want    *pb.VersionFile
		out     *os.File
		hash    hash.Hash
		written int64
	}
	files := map[string]*file{}
	var order []*file
	for _, f := range manifest.GetFiles() {
		name := f.GetName()
		if !plainName(name) || files[name] != nil || f.GetSize() < 0 {
			return fmt.Errorf("%w: manifest names a file %q that cannot be a version's", ErrCorrupt, name)
		}
		out, err := os.OpenFile(filepath.Join(staging, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer out.Close()
		files[name] = &file{want: f, out: out, hash: sha256.New()}
		order = append(order, files[name])
	}
	if files[ModelFile] == nil || files[MetadataFile] == nil {
		return fmt.Errorf("%w: manifest lacks %s or %s", ErrCorrupt, ModelFile, MetadataFile)
	}
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		data := chunk.GetData()
		f := files[data.GetFile()]
		if data == nil || f == nil {
			return fmt.Errorf("%w: a chunk of a file %q the manifest does not list", ErrCorrupt, data.GetFile())
		}
		if data.GetOffset() != f.written || f.written+int64(len(data.GetData())) > f.want.GetSize() {
			return fmt.Errorf("%w: %s: chunk at offset %d of %d bytes, expected offset %d of a %d-byte file",
				ErrCorrupt, data.GetFile(), data.GetOffset(), len(data.GetData()), f.written, f.want.GetSize())
		}
		if _, err := f.out.Write(data.GetData()); err != nil {
			return err
		}
		f.hash.Write(data.GetData())
		f.written += int64(len(data.GetData()))
	}
	for _, f := range order {
		if f.written != f.want.GetSize() {
			return fmt.Errorf("%w: %s: got %d bytes, the manifest says %d", ErrCorrupt, f.want.GetName(), f.written,
				f.want.GetSize())
		}
		if got := hex.EncodeToString(f.hash.Sum(nil)); got != strings.ToLower(f.want.GetSha256()) {
			return fmt.Errorf("%w: %s: sha256 %s, the manifest says %s", ErrCorrupt, f.want.GetName(), got,
				f.want.GetSha256())
		}
		if err := f.out.Sync(); err != nil {
			return err
		}
		if err := f.out.Close(); err != nil {
			return err
		}
	}
	return nil
}

// checkMetadata: metadata.json names this model and version, and model.onnx has the sha256 it states (what the
// server and the embedded runtime check before they load a version).
func checkMetadata(vdir, model, version string) error {
	raw, err := os.ReadFile(filepath.Join(vdir, MetadataFile))
	if err != nil {
		return err
	}
	var meta struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Sha256  string `json:"sha256"`
	}
	if err := json.Unmarshal(raw, &meta); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, MetadataFile, err)
	}
	if meta.Name != model || meta.Version != version {
		return fmt.Errorf("%w: %s names %s version %s", ErrCorrupt, MetadataFile, meta.Name, meta.Version)
	}
	sum, err := fileSHA256(filepath.Join(vdir, ModelFile))
	if err != nil {
		return err
	}
	if sum != strings.ToLower(meta.Sha256) {
		return fmt.Errorf("%w: %s: sha256 %s, %s says %s", ErrCorrupt, ModelFile, sum, MetadataFile, meta.Sha256)
	}
	return nil
}

// install renames the verified staging directory to target. A target already there is kept when it verifies
// (versions are immutable), else moved aside and replaced.
func install(staging, target string) error {
	if _, err := os.Stat(target); err == nil {
		if same, _ := sameFiles(staging, target); same {
			return nil
		}
		aside, err := os.MkdirTemp(filepath.Dir(target), ".replaced-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(aside)
		if err := os.Rename(target, filepath.Join(aside, "v")); err != nil {
			return err
		}
	}
	if err := os.Rename(staging, target); err != nil {
		return err
	}
	return syncDir(filepath.Dir(target))
}

func sameFiles(a, b string) (bool, error) {
	for _, name := range []string{MetadataFile, ModelFile} {
		x, err := os.ReadFile(filepath.Join(a, name))
		if err != nil {
			return false, err
		}
		y, err := os.ReadFile(filepath.Join(b, name))
		if err != nil || !bytes.Equal(x, y) {
			return false, err
		}
	}
	return true, nil
}

// verifiedLocally reports whether dir/<model>/<version> holds a version whose model.onnx has the sha256 the
// server announced and its metadata states.
func verifiedLocally(vdir, model, version, sha string) bool {
	if checkMetadata(vdir, model, version) != nil {
		return false
	}
	sum, err := fileSHA256(filepath.Join(vdir, ModelFile))
	return err == nil && sum == strings.ToLower(sha)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func plainName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.HasPrefix(name, ".") &&
		!strings.ContainsAny(name, `/\`) && filepath.Base(name) == name
}
