package embedded

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/dwcp/inference/clients/go/internal/imputation"
	"github.com/dwcp/inference/clients/go/internal/layout"
)

const (
	metadataFile = layout.MetadataFile
	modelFile    = layout.ModelFile
)

// metadata is the part of a version's metadata.json the embedded runtime reads (dwcp_inference/metadata.py).
type metadata struct {
	Name            string             `json:"name"`
	Version         string             `json:"version"`
	Inputs          []tensorSpec       `json:"inputs"`
	Outputs         []tensorSpec       `json:"outputs"`
	RawFields       []rawField         `json:"raw_fields"`
	FeatureNames    []string           `json:"feature_names"`
	Window          int                `json:"window"`
	Targets         []target           `json:"targets"`
	Decision        json.RawMessage    `json:"decision"`
	SHA256          string             `json:"sha256"`
	Tolerance       float64            `json:"tolerance"`
	FeaturesInGraph bool               `json:"features_in_graph"`
	FeatureOutput   string             `json:"feature_output"`
	TestVectors     []testVector       `json:"test_vectors"`
	Imputation      imputation.Table   `json:"imputation"` // optional: what to send for an unmeasured field
	decisionFields  map[string]float64 // the decision's numbers, by name
}

type tensorSpec struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []*int `json:"shape"`
}

type rawField struct {
	Name       string   `json:"name"`
	Min        *float64 `json:"min"`
	Max        *float64 `json:"max"`
	Vocabulary []string `json:"vocabulary"`
}

func (f rawField) lo() float64 {
	if f.Min == nil {
		return math.Inf(-1)
	}
	return *f.Min
}

func (f rawField) hi() float64 {
	if f.Max == nil {
		return math.Inf(1)
	}
	return *f.Max
}

type target struct {
	Name      string   `json:"name"`
	Transform string   `json:"transform"`
	Mean      float64  `json:"mean"`
	Std       float64  `json:"std"`
	Min       *float64 `json:"min"`
	Max       *float64 `json:"max"`
}

type testVector struct {
	Raw     map[string]json.RawMessage `json:"raw"`
	Input   json.RawMessage            `json:"input"`
	Outputs map[string]json.RawMessage `json:"outputs"`
}

// readMetadata parses <dir>/metadata.json and checks the fields the runtime relies on.
func readMetadata(dir string) (*metadata, error) {
	data, err := os.ReadFile(filepath.Join(dir, metadataFile))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", metadataFile, err)
	}
	var m metadata
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s does not parse: %v", metadataFile, err)
	}
	switch {
	case m.Name == "" || m.Version == "":
		return nil, fmt.Errorf("%s: name and version are required", metadataFile)
	case len(m.Inputs) == 0 || len(m.Outputs) == 0:
		return nil, fmt.Errorf("%s: inputs and outputs are required", metadataFile)
	case len(m.SHA256) != 64:
		return nil, fmt.Errorf("%s: sha256: expected 64 hex digits, got %q", metadataFile, m.SHA256)
	}
	if m.Tolerance == 0 {
		m.Tolerance = 1e-4
	}
	m.decisionFields = map[string]float64{}
	var decision map[string]any
	if len(m.Decision) > 0 {
		if err := json.Unmarshal(m.Decision, &decision); err != nil {
			return nil, fmt.Errorf("%s: decision: %v", metadataFile, err)
		}
	}
	for k, v := range decision {
		if f, ok := v.(float64); ok {
			m.decisionFields[k] = f
		}
	}
	return &m, nil
}

func (m *metadata) rawField(name string) (rawField, bool) {
	for _, f := range m.RawFields {
		if f.Name == name {
			return f, true
		}
	}
	return rawField{}, false
}
