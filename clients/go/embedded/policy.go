package embedded

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/dwcp/inference/clients/go/internal/layout"
)

const policyFile = layout.PolicyFile

// policy is a model's policy.json (services/policy.py): which versions load and which one answers.
type policy = layout.Policy

func defaultPolicy() policy { return policy{KeepLatest: 2} }

// policySource is the file a model's policy is read from: the state directory's, else the model directory's.
func policySource(modelDir, stateDir, model string) string {
	if stateDir != "" {
		p := filepath.Join(stateDir, model, policyFile)
		if _, err := os.Lstat(p); err == nil {
			return p
		}
	}
	return filepath.Join(modelDir, policyFile)
}

// readPolicy reads and validates a policy file as policy.py validate does; a missing file is the defaults.
func readPolicy(path string) (policy, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return defaultPolicy(), nil
	}
	if err != nil {
		return policy{}, fmt.Errorf("%s: cannot read: %v", path, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return policy{}, fmt.Errorf("%s: not a valid JSON object: %v", path, err)
	}
	for k := range fields {
		switch k {
		case "keep_latest", "pinned", "disabled", "labels", "split", "history":
		default:
			return policy{}, fmt.Errorf("%s: unknown field %q", path, k)
		}
	}
	p := defaultPolicy()
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&p); err != nil {
		return policy{}, fmt.Errorf("%s: %v", path, err)
	}
	if p.KeepLatest < 1 {
		return policy{}, fmt.Errorf("%s: keep_latest: expected an integer >= 1, got %d", path, p.KeepLatest)
	}
	for name, list := range map[string][]string{"pinned": p.Pinned, "disabled": p.Disabled} {
		for i, v := range list {
			if !layout.IsVersion(v) {
				return policy{}, fmt.Errorf("%s: %s[%d]: expected a version string of digits, got %q", path, name, i, v)
			}
		}
	}
	for label, v := range p.Labels {
		if !layout.IsVersion(v) {
			return policy{}, fmt.Errorf("%s: labels.%s: expected a version string of digits, got %q", path, label, v)
		}
	}
	total := 0.0
	for label, w := range p.Split {
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			return policy{}, fmt.Errorf("%s: split.%s: expected a finite number >= 0, got %g", path, label, w)
		}
		if _, ok := p.Labels[label]; !ok {
			return policy{}, fmt.Errorf("%s: split.%s: names no label", path, label)
		}
		total += w
	}
	if len(p.Split) > 0 && total <= 0 {
		return policy{}, fmt.Errorf("%s: split: expected a positive total weight", path)
	}
	return p, nil
}

// wanted tells whether a version on disk is to be loaded: newest first, keep_latest counting loaded versions
// only (services/repository.py _scan); inLatest says whether it counts toward keep_latest.
func wanted(p policy, version string, loadedLatest int) (want, inLatest bool) {
	inLatest = loadedLatest < p.KeepLatest
	if slices.Contains(p.Disabled, version) {
		return false, false
	}
	if inLatest || slices.Contains(p.Pinned, version) {
		return true, inLatest
	}
	for _, v := range p.Labels {
		if v == version {
			return true, inLatest
		}
	}
	return false, false
}

func versionLess(a, b string) int {
	x, _ := strconv.ParseUint(a, 10, 64)
	y, _ := strconv.ParseUint(b, 10, 64)
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}
