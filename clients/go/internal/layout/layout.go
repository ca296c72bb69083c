// Package layout is the model repository's on-disk format as the server reads it (docs/repository.md,
// services/repository.py, services/policy.py): the file names and a model's policy.json. The embedded runtime
// reads it and modelsync writes it, so both take it from here.
package layout

const (
	ModelFile    = "model.onnx"    // every version directory's model
	MetadataFile = "metadata.json" // and its metadata
	PolicyFile   = "policy.json"   // each model's policy
)

// Policy is a model's policy.json: which versions load (keep_latest, pinned, disabled) and which one answers
// (labels, split); history is each label's previous versions, for rollback.
type Policy struct {
	KeepLatest int                 `json:"keep_latest"`
	Pinned     []string            `json:"pinned"`
	Disabled   []string            `json:"disabled"`
	Labels     map[string]string   `json:"labels"`
	Split      map[string]float64  `json:"split"`
	History    map[string][]string `json:"history"`
}

// IsVersion tells whether name is a version directory's name: digits only.
func IsVersion(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range name {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
