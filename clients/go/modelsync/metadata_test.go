package modelsync

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/dwcp/inference/clients/go/internal/servertest"
)

// FetchMetadata reads a version's metadata.json without its model: the same bytes a full pull writes.
func TestFetchMetadataReadsOnlyTheMetadata(t *testing.T) {
	conn := servertest.Dial(t, servertest.Target(t))
	for _, model := range []string{"reliability_detector", "consensus_latency"} {
		ref, meta, err := FetchMetadata(context.Background(), conn, model, nil)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if _, err := FetchVersion(context.Background(), conn, dir, model, nil); err != nil {
			t.Fatal(err)
		}
		full, err := os.ReadFile(filepath.Join(dir, model, ref.GetVersion(), MetadataFile))
		if err != nil || !bytes.Equal(meta, full) {
			t.Fatalf("%s version %s: metadata %d bytes, the full pull's %d (%v)", model, ref.GetVersion(), len(meta),
				len(full), err)
		}
	}
	if _, _, err := FetchMetadata(context.Background(), conn, "weather", nil); err == nil {
		t.Fatal("metadata of a model the server does not have")
	}
}
