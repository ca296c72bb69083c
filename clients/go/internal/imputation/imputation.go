// Package imputation gives the drop-ins the value to send for a model input the caller did not measure: the
// `imputation` section of the serving version's metadata.json (dwcp_inference/metadata.py,
// docs/repository.md), e.g. latency_p99_ms = the median of the training data's normal rows. The embedded
// runtime answers it for its versions; for the service, a version's metadata.json is fetched once (package
// modelsync, without the model) and cached. Where neither is available, the field is sent as 0 and the answer
// says "not imputed: no metadata".
package imputation

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/modelsync"
)

// Field is one entry of the section: the value to send and how it was derived.
type Field struct {
	Value float64 `json:"value"`
	How   string  `json:"how"`
}

// Table is a version's imputation section, by raw field name (empty for a version exported before it).
type Table map[string]Field

// NoMetadata is the How of a field sent as 0 because no metadata said what to send.
const NoMetadata = "not imputed: no metadata"

// Imputed says what was sent for one unmeasured field, and why.
type Imputed struct {
	Field   string
	Value   float64
	How     string // the metadata's "how", or NoMetadata
	Version string // the model version whose metadata gave the value ("" with NoMetadata)
}

func (i Imputed) String() string {
	if i.Version == "" {
		return fmt.Sprintf("%s = %g (%s)", i.Field, i.Value, i.How)
	}
	return fmt.Sprintf("%s = %g (%s, version %s)", i.Field, i.Value, i.How, i.Version)
}

// Parse reads a metadata.json's version and imputation section, refusing values that are not finite.
func Parse(metadataJSON []byte) (string, Table, error) {
	var m struct {
		Version    string `json:"version"`
		Imputation Table  `json:"imputation"`
	}
	if err := json.Unmarshal(metadataJSON, &m); err != nil {
		return "", nil, fmt.Errorf("metadata.json: %v", err)
	}
	for name, f := range m.Imputation {
		if math.IsNaN(f.Value) || math.IsInf(f.Value, 0) || f.How == "" {
			return "", nil, fmt.Errorf("metadata.json: imputation.%s: %+v is not a finite value with a how", name, f)
		}
	}
	if m.Imputation == nil {
		m.Imputation = Table{}
	}
	return m.Version, m.Imputation, nil
}

// Local is a runtime in this process that knows its versions' imputation (the embedded Runtime): version ""
// is the one it answers with by default.
type Local interface {
	Imputation(model, version string) (string, Table, error)
}

// Imputer finds the table for one model: the local runtime's, else the service's (fetched once per version).
// The version is the one that answered last (Observe), at first the default.
type Imputer struct {
	model   string
	local   Local // nil: none
	dial    func() (grpc.ClientConnInterface, error)
	timeout time.Duration

	mu       sync.Mutex
	conn     grpc.ClientConnInterface
	closer   func() error
	current  string // the version that answered last; "" until one has
	cache    map[string]Table
	failedAt time.Time
}

// retryAfter is how long a failed fetch (no service, no ModelDistribution) is not retried.
const retryAfter = 30 * time.Second

// New returns an imputer for model: local (may be nil) first, then the service dial connects to (nil: none;
// it is called once, when first needed, and its closer called by Close).
func New(model string, local any, dial func() (grpc.ClientConnInterface, func() error, error)) *Imputer {
	im := &Imputer{model: model, cache: map[string]Table{}, timeout: 2 * time.Second}
	if l, ok := local.(Local); ok {
		im.local = l
	}
	if dial != nil {
		im.dial = func() (grpc.ClientConnInterface, error) {
			conn, closer, err := dial()
			im.closer = closer
			return conn, err
		}
	}
	return im
}

// Observe records the version that answered (its table is used, and fetched if need be, from the next call).
func (im *Imputer) Observe(version string) {
	if version == "" {
		return
	}
	im.mu.Lock()
	im.current = version
	im.mu.Unlock()
}

// Table returns the version whose table applies and the table, or ok false when no metadata is available.
func (im *Imputer) Table(ctx context.Context) (version string, t Table, ok bool) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.local != nil {
		if v, t, err := im.local.Imputation(im.model, im.current); err == nil {
			return v, t, true
		}
		if v, t, err := im.local.Imputation(im.model, ""); err == nil {
			return v, t, true
		}
	}
	if t, ok := im.cache[im.current]; ok && im.current != "" {
		return im.current, t, true
	}
	if im.dial == nil || (!im.failedAt.IsZero() && time.Since(im.failedAt) < retryAfter) {
		return "", nil, false
	}
	v, t, err := im.fetch(ctx, im.current)
	if err != nil {
		im.failedAt = time.Now()
		return "", nil, false
	}
	im.failedAt = time.Time{}
	im.cache[v] = t
	if im.current == "" {
		im.current = v
	}
	return v, t, true
}

func (im *Imputer) fetch(ctx context.Context, version string) (string, Table, error) {
	if im.conn == nil {
		conn, err := im.dial()
		if err != nil {
			return "", nil, err
		}
		im.conn = conn
	}
	var sel *pb.ModelSelector
	if version != "" {
		sel = &pb.ModelSelector{Version: version}
	}
	ctx, cancel := context.WithTimeout(ctx, im.timeout)
	defer cancel()
	ref, data, err := modelsync.FetchMetadata(ctx, im.conn, im.model, sel)
	if err != nil {
		return "", nil, err
	}
	_, t, err := Parse(data)
	return ref.GetVersion(), t, err
}

// Fill decides what to send for each unmeasured field and calls set with it: the table's value, else 0.
func (im *Imputer) Fill(ctx context.Context, unmeasured []string, set func(field string, value float64)) []Imputed {
	if len(unmeasured) == 0 {
		return nil
	}
	version, t, _ := im.Table(ctx)
	out := make([]Imputed, 0, len(unmeasured))
	for _, name := range unmeasured {
		if f, ok := t[name]; ok {
			set(name, f.Value)
			out = append(out, Imputed{Field: name, Value: f.Value, How: f.How, Version: version})
		} else {
			set(name, 0)
			out = append(out, Imputed{Field: name, How: NoMetadata})
		}
	}
	return out
}

// Close releases the connection the imputer dialled.
func (im *Imputer) Close() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closer != nil {
		return im.closer()
	}
	return nil
}
