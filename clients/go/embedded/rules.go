package embedded

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
)

// The decision rules of services/decisions.py, from each version's metadata `decision`, prepared at load.

// The four models the embedded runtime answers for, by the RPCs of the same kind.
const (
	BandwidthModel   = "bandwidth_predictor"
	CompressionModel = "compression_selector"
	AnomalyModel     = "reliability_detector"
	LatencyModel     = "consensus_latency"
)

var bandwidthTargets = [4]string{"bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms"}

type bandwidthRule struct {
	out        int
	targets    [4]int // the target of each bandwidthTargets name, or -1: the window's last value
	target     []target
	lastInput  [4]int // the input holding each name's window (for a name the model does not predict), or -1
	bandwidth  int    // the bandwidth_mbps input
	base       float64
	horizon    float64
	checkedOut []int // the outputs whose values must be finite (the model's outputs, not the features)
	// A version with quantile outputs (decisions.interval_coverage): the targets of p10 and p90, and its held-out
	// share of actuals inside [p10, p90], which is its confidence. interval[0] < 0: no interval.
	interval [2]int
	coverage float64
}

// intervalTargets are the quantile outputs a bandwidth version may answer as its interval (the contract's).
var intervalTargets = inference.BandwidthSampleInterval

type compressionRule struct {
	out     int
	choices []*pb.CompressionChoice // score unset: a template per choice
	scratch int                     // number of choices
}

type anomalyRule struct {
	score, column   int // the score output and its column (-1: a 1-D output)
	sign            float64
	threshold, crit float64
	names           []string
	mean, std       []float64
	fromInput       []int // per name: the input holding its raw value, or -1: the feature output's column
	featureColumn   []int
	features        int // the feature output
	featuresPerItem int
}

type latencyRule struct {
	score, errors  int // outputs; -1 when the errors are computed from a reconstruction
	reconstruction int // output, or -1
	features       int // the feature output
	threshold      float64
	names          []string
}

func parseRule(model string, m *metadata, outputIndex func(string) int) (any, error) {
	var d map[string]json.RawMessage
	if err := json.Unmarshal(m.Decision, &d); err != nil {
		return nil, err
	}
	num := func(key string, def float64) float64 {
		if v, ok := m.decisionFields[key]; ok {
			return v
		}
		return def
	}
	str := func(key string) string {
		var s string
		json.Unmarshal(d[key], &s)
		return s
	}
	finiteOuts := make([]int, len(m.Outputs))
	for k := range finiteOuts {
		finiteOuts[k] = k
	}
	switch model {
	case BandwidthModel:
		r := &bandwidthRule{out: 0, target: m.Targets, base: 1 - math.Min(num("validation_mape_pct", 0)/100, 1),
			horizon: num("interval_seconds", 300), checkedOut: finiteOuts, bandwidth: inputIndex(m, "bandwidth_mbps")}
		for i, name := range bandwidthTargets {
			r.targets[i], r.lastInput[i] = -1, inputIndex(m, name)
			for k, t := range m.Targets {
				if t.Name == name {
					r.targets[i] = k
				}
			}
		}
		r.interval = [2]int{-1, -1}
		if coverage := num("interval_coverage", math.NaN()); !math.IsNaN(coverage) {
			for i, name := range intervalTargets {
				for k, t := range m.Targets {
					if t.Name == name {
						r.interval[i] = k
					}
				}
			}
			if r.interval[0] < 0 || r.interval[1] < 0 {
				r.interval = [2]int{-1, -1}
			}
			r.coverage = math.Min(math.Max(coverage, 0), 1)
		}
		if r.bandwidth < 0 && r.interval[0] < 0 {
			return nil, fmt.Errorf("the model takes no bandwidth_mbps (the confidence needs it)")
		}
		return r, nil
	case CompressionModel:
		var choices []struct {
			Codec string `json:"codec"`
			Level int32  `json:"level"`
		}
		if err := json.Unmarshal(d["choices"], &choices); err != nil || len(choices) == 0 {
			return nil, fmt.Errorf("choices: expected a list of {codec, level}")
		}
		r := &compressionRule{out: 0, scratch: len(choices)}
		for _, c := range choices {
			codec, ok := codecs[c.Codec]
			if !ok {
				return nil, fmt.Errorf("choices: unknown codec %q", c.Codec)
			}
			r.choices = append(r.choices, &pb.CompressionChoice{Codec: codec, Level: c.Level})
		}
		return r, nil
	case AnomalyModel:
		r := &anomalyRule{score: outputIndex(str("score_output")), column: -1, sign: num("score_sign", 1),
			threshold: num("threshold", math.NaN()), crit: num("critical_threshold", math.NaN()),
			features: outputIndex(m.FeatureOutput)}
		if r.score < 0 {
			return nil, fmt.Errorf("score_output %q is not an output", str("score_output"))
		}
		if _, ok := d["score_column"]; ok {
			r.column = int(num("score_column", 0))
		}
		var normal map[string][2]float64
		if err := json.Unmarshal(d["normal"], &normal); err != nil {
			return nil, fmt.Errorf("normal: %v", err)
		}
		// The normal statistics in the metadata's order (Python keeps a JSON object's order).
		for _, name := range jsonKeys(d["normal"]) {
			r.names = append(r.names, name)
			r.mean, r.std = append(r.mean, normal[name][0]), append(r.std, normal[name][1])
			in, col := inputIndex(m, name), -1
			if in >= 0 && len(m.Inputs[in].Shape) > 1 {
				in = -1
			}
			for k, f := range m.FeatureNames {
				if f == name {
					col = k
				}
			}
			if in < 0 && col < 0 {
				return nil, fmt.Errorf("normal: %s is neither a raw field nor a feature", name)
			}
			r.fromInput, r.featureColumn = append(r.fromInput, in), append(r.featureColumn, col)
		}
		r.featuresPerItem = len(m.FeatureNames)
		return r, nil
	case LatencyModel:
		r := &latencyRule{score: outputIndex(str("score_output")), errors: outputIndex(str("errors_output")),
			reconstruction: -1, features: outputIndex(m.FeatureOutput), threshold: num("threshold", math.NaN()),
			names: m.FeatureNames}
		if name := str("reconstruction_output"); name != "" {
			r.reconstruction, r.score, r.errors = outputIndex(name), -1, -1
			if r.reconstruction < 0 {
				return nil, fmt.Errorf("reconstruction_output %q is not an output", name)
			}
		} else if r.score < 0 || r.errors < 0 {
			return nil, fmt.Errorf("score_output and errors_output must name outputs")
		}
		return r, nil
	}
	return nil, fmt.Errorf("unknown model %q", model)
}

func inputIndex(m *metadata, name string) int {
	for k, t := range m.Inputs {
		if t.Name == name {
			return k
		}
	}
	return -1
}

// jsonKeys returns an object's keys in their order in the text.
func jsonKeys(raw json.RawMessage) []string {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.Token() // {
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			break
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		dec.Decode(&skip)
	}
	return keys
}

var codecs = map[string]pb.Codec{"none": pb.Codec_CODEC_NONE, "lz4": pb.Codec_CODEC_LZ4,
	"zstd": pb.Codec_CODEC_ZSTD, "brotli": pb.Codec_CODEC_BROTLI}

// nonFinite fails a call whose outputs (those listed) hold NaN or infinity for some items, as the server does.
func (v *version) nonFinite(b *binding, outs ...int) error {
	var items []string
	var names []string
	for _, k := range outs {
		w := v.outputs[k].width
		bad := false
		for i := 0; i < b.n; i++ {
			for j := 0; j < w; j++ {
				if x := b.value(k, i*w+j); math.IsNaN(x) || math.IsInf(x, 0) {
					if len(items) < 20 {
						items = append(items, fmt.Sprint(i))
					}
					bad = true
					break
				}
			}
		}
		if bad {
			names = append(names, v.outputs[k].name)
		}
	}
	if names == nil {
		return nil
	}
	return status.Errorf(codes.Internal, "%s v%s: the model gave a non-finite output (%s) for item(s) %s of this "+
		"call; no answer is given", v.model, v.meta.Version, strings.Join(names, ", "), strings.Join(items, ", "))
}

// rankDescending orders indices by key, largest first, equal keys in index order (numpy's stable argsort of the
// negated keys); an insertion sort: the lists are a few to a few dozen long.
func rankDescending(order []int, key func(int) float64) {
	for i := 1; i < len(order); i++ {
		k, x := order[i], key(order[i])
		j := i
		for ; j > 0 && key(order[j-1]) < x; j-- {
			order[j] = order[j-1]
		}
		order[j] = k
	}
}

// decoded is target ti of item i in domain units (features.decode_targets), or an INTERNAL error if not finite.
func (r *bandwidthRule) decoded(v *version, b *binding, i, ti int) (float64, error) {
	t := r.target[ti]
	y := b.value(r.out, i*v.outputs[r.out].width+ti)*t.Std + t.Mean
	switch t.Transform {
	case "log1p":
		y = math.Expm1(y)
	case "log":
		y = math.Exp(y)
	}
	if t.Min != nil && y < *t.Min {
		y = *t.Min
	}
	if t.Max != nil && y > *t.Max {
		y = *t.Max
	}
	if math.IsNaN(y) || math.IsInf(y, 0) {
		return 0, status.Errorf(codes.Internal, "%s v%s: the model gave a non-finite output (%s) for item(s) %d "+
			"of this call; no answer is given", v.model, v.meta.Version, t.Name, i)
	}
	return y, nil
}

// lastSent gives the names the version neither predicts nor reads the value of the item's last sample as sent
// (decisions.bandwidth: the server's columns hold every field of the request), after answer.
func (r *bandwidthRule) lastSent(p *pb.BandwidthPrediction, last *pb.NetworkSample) {
	for k, ti := range r.targets {
		if ti >= 0 || r.lastInput[k] >= 0 {
			continue
		}
		switch bandwidthTargets[k] {
		case "latency_ms":
			p.PredictedLatencyMs = last.GetLatencyMs()
		case "packet_loss":
			p.PredictedPacketLoss = last.GetPacketLoss()
		case "jitter_ms":
			p.PredictedJitterMs = last.GetJitterMs()
		}
	}
}

// bandwidth answers item i (decisions.bandwidth).
func (r *bandwidthRule) answer(v *version, b *binding, i int, p *pb.BandwidthPrediction) error {
	var pred [4]float64
	for k, ti := range r.targets {
		if ti < 0 {
			if in := r.lastInput[k]; in >= 0 {
				width := v.inputs[in].width
				pred[k] = b.f64[in][i*width+width-1]
			}
			continue
		}
		y, err := r.decoded(v, b, i, ti)
		if err != nil {
			return err
		}
		pred[k] = y
	}
	p.PredictedBandwidthMbps, p.PredictedLatencyMs, p.PredictedPacketLoss, p.PredictedJitterMs = pred[0], pred[1],
		pred[2], pred[3]
	if r.interval[0] >= 0 { // calibrated: the held-out share of actuals inside [p10, p90]
		lo, err := r.decoded(v, b, i, r.interval[0])
		if err != nil {
			return err
		}
		hi, err := r.decoded(v, b, i, r.interval[1])
		if err != nil {
			return err
		}
		p.PredictedBandwidthP10Mbps, p.PredictedBandwidthP90Mbps = &lo, &hi
		p.Confidence = r.coverage
		return nil
	}
	p.PredictedBandwidthP10Mbps, p.PredictedBandwidthP90Mbps = nil, nil
	width := v.inputs[r.bandwidth].width
	bw := b.f64[r.bandwidth][i*width : (i+1)*width]
	mean := pairwiseSum(bw) / float64(width)
	var sq float64
	squares := squaresScratch(bw)
	sq = pairwiseSum(squares) / float64(width)
	cv := math.Sqrt(math.Max(sq-mean*mean, 0)) / math.Max(mean, 1e-9)
	p.Confidence = math.Min(math.Max(r.base/(1+cv), 0), 1)
	return nil
}

func squaresScratch(x []float64) []float64 {
	var buf [1024]float64
	out := buf[:0]
	if len(x) > len(buf) {
		out = make([]float64, 0, len(x))
	}
	for _, v := range x {
		out = append(out, v*v)
	}
	return out
}

// compression answers item i (decisions.compression): every choice, most probable first (a stable order).
func (r *compressionRule) answer(v *version, b *binding, i int, d *pb.CompressionDecision) {
	w := v.outputs[r.out].width
	probs := b.outF32[r.out][i*w : (i+1)*w]
	var orderBuf [16]int
	order := orderBuf[:0]
	if len(probs) > len(orderBuf) {
		order = make([]int, 0, len(probs))
	}
	for k := range probs {
		order = append(order, k)
	}
	rankDescending(order, func(k int) float64 { return float64(probs[k]) })
	d.Scores = make([]*pb.CompressionChoice, len(order))
	choices := make([]pb.CompressionChoice, len(order))
	for rank, k := range order {
		c := &choices[rank]
		c.Codec, c.Level, c.Score = r.choices[k].Codec, r.choices[k].Level, float64(probs[k])
		d.Scores[rank] = c
	}
	d.Choice = d.Scores[0]
}

// anomaly answers item i (decisions.anomaly): the verdict and the three largest deviations from normal.
func (r *anomalyRule) answer(v *version, b *binding, i int, a *pb.AnomalyVerdict) {
	w := v.outputs[r.score].width
	var s float64
	if r.column >= 0 {
		s = b.value(r.score, i*w+r.column)
	} else {
		s = b.value(r.score, i)
	}
	s *= r.sign
	n := len(r.names)
	var buf [64]float64
	raw, dev := buf[:0], make([]float64, 0, n)
	if 2*n > len(buf) {
		raw = make([]float64, 0, n)
	}
	for k := range r.names {
		var x float64
		if in := r.fromInput[k]; in >= 0 {
			x = b.f64[in][i]
		} else {
			x = b.value(r.features, i*r.featuresPerItem+r.featureColumn[k])
		}
		raw = append(raw, x)
		dev = append(dev, (x-r.mean[k])/r.std[k])
	}
	order := make([]int, n)
	for k := range order {
		order[k] = k
	}
	rankDescending(order, func(k int) float64 { return math.Abs(dev[k]) })
	if len(order) > 3 {
		order = order[:3]
	}
	a.IsAnomaly, a.Score, a.Threshold = s >= r.threshold, s, r.threshold
	switch {
	case s >= r.crit:
		a.Severity = pb.Severity_SEVERITY_CRITICAL
	case a.IsAnomaly:
		a.Severity = pb.Severity_SEVERITY_WARNING
	default:
		a.Severity = pb.Severity_SEVERITY_INFO
	}
	contributions := make([]pb.FeatureContribution, len(order))
	a.Contributions = make([]*pb.FeatureContribution, len(order))
	for rank, k := range order {
		c := &contributions[rank]
		c.Feature, c.Value, c.Expected, c.Deviation = r.names[k], raw[k], r.mean[k], dev[k]
		a.Contributions[rank] = c
	}
}

// latency answers item i (decisions.high_latency): the verdict and every feature's error, largest first.
func (r *latencyRule) answer(v *version, b *binding, i int, l *pb.LatencyVerdict) {
	f := len(r.names)
	errs := make([]float64, f)
	var score float64
	var high bool
	if r.reconstruction >= 0 { // an imported autoencoder: the error is computed here
		steps := v.outputs[r.reconstruction].width / f
		for j := 0; j < steps; j++ {
			for k := 0; k < f; k++ {
				at := (i*steps+j)*f + k
				d := b.value(r.reconstruction, at) - b.value(r.features, at)
				errs[k] += d * d
			}
		}
		for k := range errs {
			errs[k] /= float64(steps)
			score += errs[k]
		}
		score /= float64(f)
		high = score >= r.threshold
	} else {
		for k := range errs {
			errs[k] = b.value(r.errors, i*f+k)
		}
		s32 := b.outF32[r.score][i]
		score = float64(s32)
		high = s32 >= float32(r.threshold) // numpy compares a float32 score in float32
	}
	order := make([]int, f)
	for k := range order {
		order[k] = k
	}
	rankDescending(order, func(k int) float64 { return errs[k] })
	l.IsHighLatency, l.ReconstructionError, l.Threshold = high, score, r.threshold
	featureErrors := make([]pb.FeatureError, f)
	l.FeatureErrors = make([]*pb.FeatureError, f)
	for rank, k := range order {
		e := &featureErrors[rank]
		e.Feature, e.Error = r.names[k], errs[k]
		l.FeatureErrors[rank] = e
	}
}
