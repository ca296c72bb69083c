package modelsync

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/internal/layout"
)

// policy is services/policy.py's policy.json. A synced directory holds exactly the versions the server has
// loaded, so keep_latest covers them all and nothing is pinned or disabled: a loader of the directory then
// loads the same versions and resolves labels, the split and the default as the server does.
type policy = layout.Policy

func policyOf(state *pb.ModelState) policy {
	p := policy{KeepLatest: max(len(state.GetVersions()), 1), Pinned: []string{}, Disabled: []string{},
		Labels: map[string]string{}, Split: map[string]float64{}, History: map[string][]string{}}
	for label, version := range state.GetLabels() {
		p.Labels[label] = version
	}
	for label, weight := range state.GetSplit() {
		p.Split[label] = weight
	}
	for label, h := range state.GetHistory() {
		p.History[label] = append([]string{}, h.GetVersions()...)
	}
	return p
}

// writePolicy replaces dir/<model>/policy.json atomically (a temporary file beside it, fsync, rename) when its
// content changes; unchanged content is not rewritten (a loader polling the file sees no change).
func writePolicy(modelDir string, state *pb.ModelState) (bool, error) {
	data, err := json.MarshalIndent(policyOf(state), "", " ")
	if err != nil {
		return false, err
	}
	path := filepath.Join(modelDir, PolicyFile)
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(modelDir, ".policy-")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, err
	}
	if err := tmp.Close(); err != nil {
		return false, err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, err
	}
	return true, syncDir(modelDir)
}
