package embedded

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// input is one tensor the graph takes: a raw field's column, [n] or [n, window].
type input struct {
	name   string
	field  rawField
	width  int              // values per item: the window, or 1
	vocab  map[string]int64 // a categorical field's index of each value
	custom string           // "custom.<name>" fields: the key in the message's custom map
}

// output is one tensor the graph answers, [n, dims...].
type output struct {
	name  string
	dtype ort.TensorElementDataType
	dims  []int64 // after the batch dimension
	width int     // values per item
}

// version is one verified model version: its metadata, session and decision rule. Its session is freed (close)
// only once no call uses it: calls hold mu for reading (tryAcquire), close takes it for writing.
type version struct {
	model   string
	dir     string
	meta    *metadata
	session *ort.DynamicAdvancedSession
	inputs  []input
	outputs []output // the metadata's outputs, then the feature output
	byName  map[string]int
	// per input, the request field it reads (an index into fieldsOf(model); -1: a custom field)
	reqField   []int
	checkOrder []int         // inputs in the metadata's raw_fields order
	rule       any           // *bandwidthRule, *compressionRule, *anomalyRule or *latencyRule
	single     chan *binding // free single-item bindings, reused across calls

	mu     sync.RWMutex
	closed bool
}

// binding holds a call's tensors: inputs filled by the caller, outputs written by the model.
type binding struct {
	n         int
	in, out   []ort.Value
	f64       [][]float64 // per input, nil for an int64 input
	i64       [][]int64   // per input, nil for a float64 input
	outF32    [][]float32
	outI64    [][]int64
	outF64    [][]float64
	destroyed bool
}

// refusal is why a version is not served.
type refusal struct{ reason string }

func (r *refusal) Error() string { return r.reason }

func refuse(format string, args ...any) error { return &refusal{fmt.Sprintf(format, args...)} }

// loadVersion reads, checks and verifies <dir> as the server does (services/runtime.py load/_verify).
func loadVersion(model, dir string) (*version, error) {
	meta, err := readMetadata(dir)
	if err != nil {
		return nil, refuse("%v", err)
	}
	if meta.Version != filepath.Base(dir) {
		return nil, refuse("metadata says version %q but the directory is %q", meta.Version, filepath.Base(dir))
	}
	if !meta.FeaturesInGraph || meta.FeatureOutput == "" {
		return nil, refuse("its model.onnx has no feature graph (metadata features_in_graph is not true): it " +
			"needs the Python feature pipeline, which the embedded runtime does not have; the server serves it " +
			"(re-export the version to embed it)")
	}
	data, err := os.ReadFile(filepath.Join(dir, modelFile))
	if err != nil {
		return nil, refuse("%s is missing or unreadable: %v", modelFile, err)
	}
	sum := sha256.Sum256(data)
	if digest := hex.EncodeToString(sum[:]); digest != meta.SHA256 {
		return nil, refuse("sha256 of %s is %s..., metadata says %s...", modelFile, digest[:12], meta.SHA256[:12])
	}
	v := &version{model: model, dir: dir, meta: meta, byName: map[string]int{}}
	if err := v.open(data); err != nil {
		return nil, err
	}
	if err := v.prepareFields(); err != nil {
		v.session.Destroy()
		return nil, err
	}
	if v.rule, err = parseRule(model, meta, v.outputIndex); err != nil {
		v.session.Destroy()
		return nil, refuse("decision: %v", err)
	}
	if err := v.verify(); err != nil {
		v.session.Destroy()
		return nil, err
	}
	v.single = make(chan *binding, 2*runtime.GOMAXPROCS(0))
	return v, nil
}

func (v *version) open(data []byte) error {
	ins, outs, err := ort.GetInputOutputInfoWithONNXData(data)
	if err != nil {
		return refuse("onnxruntime cannot load %s: %v", modelFile, err)
	}
	var graphIn, declaredIn []string
	for _, i := range ins {
		graphIn = append(graphIn, i.Name)
	}
	for _, t := range v.meta.Inputs {
		declaredIn = append(declaredIn, t.Name)
	}
	if !slices.Equal(graphIn, declaredIn) {
		return refuse("model inputs %v do not match metadata %v", graphIn, declaredIn)
	}
	var graphOut, declaredOut []string
	info := map[string]ort.InputOutputInfo{}
	for _, o := range outs {
		graphOut = append(graphOut, o.Name)
		info[o.Name] = o
	}
	for _, t := range v.meta.Outputs {
		declaredOut = append(declaredOut, t.Name)
	}
	declaredOut = append(declaredOut, v.meta.FeatureOutput)
	if !sameSet(graphOut, declaredOut) {
		return refuse("model outputs %v do not match metadata %v", sorted(graphOut), sorted(declaredOut))
	}
	for k, t := range v.meta.Inputs {
		in := input{name: t.Name, width: 1}
		for _, d := range t.Shape[1:] {
			if d == nil {
				return refuse("input %s: only the batch dimension may be dynamic", t.Name)
			}
			in.width *= *d
		}
		f, ok := v.meta.rawField(t.Name)
		if !ok {
			return refuse("input %s is not one of the metadata's raw_fields", t.Name)
		}
		in.field = f
		if len(f.Vocabulary) > 0 {
			if ins[k].DataType != ort.TensorElementDataTypeInt64 {
				return refuse("input %s: a categorical field takes int64 indices, the graph takes %v", t.Name,
					ins[k].DataType)
			}
			in.vocab = map[string]int64{}
			for i, word := range f.Vocabulary {
				in.vocab[word] = int64(i)
			}
		} else if ins[k].DataType != ort.TensorElementDataTypeDouble {
			return refuse("input %s: the graph takes %v, expected float64", t.Name, ins[k].DataType)
		}
		if len(t.Name) > len(customPrefix) && t.Name[:len(customPrefix)] == customPrefix {
			in.custom = t.Name[len(customPrefix):]
		}
		v.byName[t.Name] = k
		v.inputs = append(v.inputs, in)
	}
	for _, name := range declaredOut {
		o := output{name: name, dtype: info[name].DataType, width: 1}
		dims := info[name].Dimensions
		for _, d := range dims[1:] {
			if d < 1 {
				return refuse("output %s: only the batch dimension may be dynamic, shape %v", name, dims)
			}
			o.width *= int(d)
		}
		o.dims = append([]int64(nil), dims[1:]...)
		switch o.dtype {
		case ort.TensorElementDataTypeFloat, ort.TensorElementDataTypeInt64, ort.TensorElementDataTypeDouble:
		default:
			return refuse("output %s: type %v is not supported", name, o.dtype)
		}
		v.outputs = append(v.outputs, o)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return err
	}
	defer opts.Destroy()
	// One thread per call, as the server runs its sessions; no arena (it would keep memory after a swap).
	for _, set := range []error{opts.SetIntraOpNumThreads(1), opts.SetInterOpNumThreads(1), opts.SetCpuMemArena(false)} {
		if set != nil {
			return set
		}
	}
	var outNames []string
	for _, o := range v.outputs {
		outNames = append(outNames, o.name)
	}
	v.session, err = ort.NewDynamicAdvancedSessionWithONNXData(data, declaredIn, outNames, opts)
	if err != nil {
		return refuse("onnxruntime cannot load %s: %v", modelFile, err)
	}
	return nil
}

func (v *version) newBinding(n int) (*binding, error) {
	b := &binding{n: n, f64: make([][]float64, len(v.inputs)), i64: make([][]int64, len(v.inputs)),
		outF32: make([][]float32, len(v.outputs)), outI64: make([][]int64, len(v.outputs)),
		outF64: make([][]float64, len(v.outputs))}
	fail := func(err error) (*binding, error) { b.destroy(); return nil, err }
	for k, in := range v.inputs {
		shape := ort.NewShape(int64(n))
		if len(v.meta.Inputs[k].Shape) > 1 {
			shape = ort.NewShape(int64(n), int64(in.width))
		}
		if in.vocab != nil {
			t, err := ort.NewEmptyTensor[int64](shape)
			if err != nil {
				return fail(err)
			}
			b.in, b.i64[k] = append(b.in, t), t.GetData()
		} else {
			t, err := ort.NewEmptyTensor[float64](shape)
			if err != nil {
				return fail(err)
			}
			b.in, b.f64[k] = append(b.in, t), t.GetData()
		}
	}
	for k, o := range v.outputs {
		shape := ort.NewShape(append([]int64{int64(n)}, o.dims...)...)
		switch o.dtype {
		case ort.TensorElementDataTypeFloat:
			t, err := ort.NewEmptyTensor[float32](shape)
			if err != nil {
				return fail(err)
			}
			b.out, b.outF32[k] = append(b.out, t), t.GetData()
		case ort.TensorElementDataTypeInt64:
			t, err := ort.NewEmptyTensor[int64](shape)
			if err != nil {
				return fail(err)
			}
			b.out, b.outI64[k] = append(b.out, t), t.GetData()
		default:
			t, err := ort.NewEmptyTensor[float64](shape)
			if err != nil {
				return fail(err)
			}
			b.out, b.outF64[k] = append(b.out, t), t.GetData()
		}
	}
	return b, nil
}

func (b *binding) destroy() {
	if b.destroyed {
		return
	}
	b.destroyed = true
	for _, t := range append(b.in, b.out...) {
		t.Destroy()
	}
}

// bind returns tensors for n items: pooled ones for a single item, new ones for a batch; release gives them back.
func (v *version) bind(n int) (*binding, error) {
	if n == 1 {
		select {
		case b := <-v.single:
			return b, nil
		default:
		}
	}
	return v.newBinding(n)
}

func (v *version) release(b *binding) {
	if b.n == 1 {
		select {
		case v.single <- b:
			return
		default:
		}
	}
	b.destroy()
}

func (v *version) run(b *binding) error {
	if err := v.session.Run(b.in, b.out); err != nil {
		return fmt.Errorf("%s version %s: %w", v.model, v.meta.Version, err)
	}
	return nil
}

// outputIndex is the position of the named output in a binding's outputs, or -1.
func (v *version) outputIndex(name string) int {
	for k, o := range v.outputs {
		if o.name == name {
			return k
		}
	}
	return -1
}

// value is output k's value at flat index i, as float64.
func (b *binding) value(k, i int) float64 {
	switch {
	case b.outF32[k] != nil:
		return float64(b.outF32[k][i])
	case b.outI64[k] != nil:
		return float64(b.outI64[k][i])
	default:
		return b.outF64[k][i]
	}
}

// tryAcquire marks the version in use by a call; false once it is being retired (the caller takes a newer snapshot).
func (v *version) tryAcquire() bool {
	if !v.mu.TryRLock() {
		return false
	}
	if v.closed {
		v.mu.RUnlock()
		return false
	}
	return true
}

func (v *version) releaseCall() { v.mu.RUnlock() }

// close frees the session once the calls using the version have finished; new calls no longer acquire it.
func (v *version) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return
	}
	v.closed = true
	for len(v.single) > 0 {
		(<-v.single).destroy()
	}
	v.session.Destroy()
}

// verify runs every test vector's raw columns and compares outputs and features within the metadata's tolerance.
func (v *version) verify() error {
	if len(v.meta.TestVectors) == 0 {
		return refuse("metadata has no test vectors")
	}
	for i, vec := range v.meta.TestVectors {
		if vec.Raw == nil {
			return refuse("test vector %d: no raw columns (a version with the feature graph)", i)
		}
		if err := v.checkVector(i, vec); err != nil {
			return err
		}
	}
	return v.probeEdges()
}

func (v *version) checkVector(i int, vec testVector) error {
	b, err := v.newBinding(1)
	if err != nil {
		return err
	}
	defer b.destroy()
	for k, in := range v.inputs {
		raw, ok := vec.Raw[in.name]
		if !ok {
			return refuse("test vector %d: raw column %s is missing", i, in.name)
		}
		if in.vocab != nil {
			var words []string
			if err := decodeFlat(raw, &words); err != nil || len(words) != in.width {
				return refuse("test vector %d: raw column %s: expected %d strings", i, in.name, in.width)
			}
			for j, w := range words {
				idx, known := in.vocab[w]
				if !known {
					idx = -1
				}
				b.i64[k][j] = idx
			}
			continue
		}
		var nums []float64
		if err := decodeFlat(raw, &nums); err != nil || len(nums) != in.width {
			return refuse("test vector %d: raw column %s: expected %d numbers", i, in.name, in.width)
		}
		copy(b.f64[k], nums)
	}
	if err := v.run(b); err != nil {
		return refuse("test vector %d: %v", i, err)
	}
	for k, o := range v.outputs {
		want := vec.Input
		if k < len(v.meta.Outputs) {
			w, ok := vec.Outputs[o.name]
			if !ok {
				return refuse("test vector %d: no expected value for output %s", i, o.name)
			}
			want = w
		}
		var nums []float64
		if err := decodeFlat(want, &nums); err != nil || len(nums) != o.width {
			return refuse("test vector %d: output %s: expected %d numbers in the metadata", i, o.name, o.width)
		}
		worst := 0.0
		for j, w := range nums {
			diff := math.Abs(b.value(k, j)-w) / (1 + math.Abs(w)) // as at export (export/publish.py)
			if diff > worst || math.IsNaN(diff) {
				worst = diff
			}
		}
		if !(worst <= v.meta.Tolerance) {
			return refuse("test vector %d: output %s differs by %.3g (tolerance %g)", i, o.name, worst,
				v.meta.Tolerance)
		}
	}
	return nil
}

// decodeFlat decodes a JSON value, list or nested list into a flat slice.
func decodeFlat[T any](raw json.RawMessage, out *[]T) error {
	var one T
	if json.Unmarshal(raw, &one) == nil {
		*out = append(*out, one)
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return err
	}
	for _, item := range list {
		if err := decodeFlat(item, out); err != nil {
			return err
		}
	}
	return nil
}

func sameSet(a, b []string) bool { return slices.Equal(sorted(a), sorted(b)) }

func sorted(a []string) []string {
	out := slices.Clone(a)
	slices.Sort(out)
	return out
}

// probeEdges runs the model at the ends of every raw field's valid range (dwcp_inference/raw_inputs.py
// edge_columns: all at the minimum, all at the maximum, each alone at one end with the others at the other,
// and for a windowed model windows ramping from one end to the other) and refuses the version if any output
// there is NaN or infinite, as the server does.
func (v *version) probeEdges() error {
	var numeric []int // inputs with both ends declared
	for k, in := range v.inputs {
		if in.vocab == nil && in.field.Min != nil && in.field.Max != nil {
			numeric = append(numeric, k)
		}
	}
	if len(numeric) == 0 {
		return nil
	}
	steps := max(v.meta.Window, 1)
	rows := 2 + 2*len(numeric)
	if v.meta.Window > 1 {
		rows += 2
	}
	b, err := v.newBinding(rows)
	if err != nil {
		return err
	}
	defer b.destroy()
	// at(row, step, f) is numeric field f's value in probe row `row` at `step`.
	at := func(row, step, f int) float64 {
		lo, hi := *v.inputs[numeric[f]].field.Min, *v.inputs[numeric[f]].field.Max
		switch {
		case row == 0:
			return lo
		case row == 1:
			return hi
		case row < 2+2*len(numeric):
			k, oneHigh := (row-2)/2, (row-2)%2 == 0
			if oneHigh == (k == f) {
				return hi
			}
			return lo
		}
		t := 0.0
		if steps > 1 {
			t = float64(step) / float64(steps-1)
		}
		if row == rows-2 {
			return lo + (hi-lo)*t
		}
		return hi + (lo-hi)*t
	}
	for k, in := range v.inputs {
		f := slices.Index(numeric, k)
		for row := 0; row < rows; row++ {
			for step := 0; step < in.width; step++ {
				i := row*in.width + step
				switch {
				case in.vocab != nil:
					b.i64[k][i] = int64(row % len(in.field.Vocabulary))
				case f >= 0:
					b.f64[k][i] = at(row, step, f)
				case in.field.Min != nil:
					b.f64[k][i] = *in.field.Min
				case in.field.Max != nil:
					b.f64[k][i] = *in.field.Max
				default:
					b.f64[k][i] = 0
				}
			}
		}
	}
	if err := v.run(b); err != nil {
		return refuse("edge probe (inputs at the ends of each raw field's range): %v", err)
	}
	var bad []string
	for k, o := range v.outputs {
		for i := 0; i < rows*o.width; i++ {
			if x := b.value(k, i); math.IsNaN(x) || math.IsInf(x, 0) {
				bad = append(bad, o.name)
				break
			}
		}
	}
	if bad != nil {
		return refuse("edge probe: non-finite output (%s) at the ends of the raw fields' valid ranges",
			strings.Join(bad, ", "))
	}
	return nil
}
