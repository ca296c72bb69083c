package modelsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/layout"
)

// FetchMetadata reads one version's metadata.json (the one selector picks; nil: the server's default) without
// its model: GetModel streams metadata.json before model.onnx (services/distribution.py), so the stream is read
// until metadata.json is complete, checked against the manifest's size and sha256, and then cancelled. It
// returns the version the server chose and the file's bytes.
func FetchMetadata(ctx context.Context, conn grpc.ClientConnInterface, model string,
	selector *pb.ModelSelector) (*pb.ModelRef, []byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the rest of the stream (model.onnx) is not wanted
	stream, err := pb.NewModelDistributionClient(conn).GetModel(ctx,
		&pb.GetModelRequest{Model: model, Selector: selector})
	if err != nil {
		return nil, nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, nil, err
	}
	manifest := first.GetManifest()
	if manifest == nil || manifest.GetModel().GetName() != model || !layout.IsVersion(manifest.GetModel().GetVersion()) {
		return nil, nil, fmt.Errorf("%w: %s: the stream did not start with a manifest of this model", ErrCorrupt, model)
	}
	var want *pb.VersionFile
	for _, f := range manifest.GetFiles() {
		if f.GetName() == MetadataFile {
			want = f
		}
	}
	if want == nil || want.GetSize() < 0 {
		return nil, nil, fmt.Errorf("%w: %s: the manifest lists no %s", ErrCorrupt, model, MetadataFile)
	}
	data := make([]byte, 0, want.GetSize())
	for int64(len(data)) < want.GetSize() {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		d := chunk.GetData()
		if d.GetFile() != MetadataFile {
			continue // another file first: not the order the server sends in, but harmless to skip
		}
		if d.GetOffset() != int64(len(data)) || int64(len(data)+len(d.GetData())) > want.GetSize() {
			return nil, nil, fmt.Errorf("%w: %s: chunk at offset %d of %d bytes, expected offset %d of a %d-byte file",
				ErrCorrupt, MetadataFile, d.GetOffset(), len(d.GetData()), len(data), want.GetSize())
		}
		data = append(data, d.GetData()...)
	}
	if int64(len(data)) != want.GetSize() {
		return nil, nil, fmt.Errorf("%w: %s: got %d bytes, the manifest says %d", ErrCorrupt, MetadataFile, len(data),
			want.GetSize())
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != strings.ToLower(want.GetSha256()) {
		return nil, nil, fmt.Errorf("%w: %s: sha256 does not match the manifest's", ErrCorrupt, MetadataFile)
	}
	return manifest.GetModel(), data, nil
}
