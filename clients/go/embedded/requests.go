package embedded

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
)

// Requests to raw columns as services/convert.py builds them, written straight into the version's input tensors,
// then checked against the metadata's raw-field ranges (features.py validate_raw): the first bad value is refused
// with codes.InvalidArgument naming it as the caller sent it. The wording follows the server's; the text is not
// guaranteed to be byte-identical.

const customPrefix = "custom." // a raw field "custom.<name>" is read from the message's custom map

// The request fields each kind of model may read, in the order requestField indexes them.
var (
	networkFields   = []string{"bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms", "time_of_day", "day_of_week"}
	payloadFields   = []string{"throughput_mbps", "rtt_ms", "packet_loss", "link_type", "size_bytes", "payload_entropy", "payload_ratio"}
	nodeFields      = []string{"error_rate", "timeout_rate", "latency_p50_ms", "latency_p99_ms", "sla_violations", "connection_failures", "packet_loss_rate", "cpu_usage", "memory_usage", "disk_io_mbps"}
	consensusFields = []string{"queue_depth", "proposals_pending", "proposals_committed", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "leader_changes", "quorum_size", "active_nodes", "network_tier", "dwcp_mode", "consensus_type"}
	// A compression field as the caller's message names it (convert.py PAYLOAD_FIELDS).
	payloadPaths = map[string]string{"throughput_mbps": "link.throughput_mbps", "rtt_ms": "link.rtt_ms",
		"packet_loss": "link.packet_loss", "size_bytes": "payload.size_bytes",
		"payload_entropy": "payload.entropy_bits_per_byte", "payload_ratio": "payload.recent_compression_ratio"}
	linkTypes = map[pb.LinkType]string{pb.LinkType_LINK_TYPE_DC: "dc", pb.LinkType_LINK_TYPE_METRO: "metro",
		pb.LinkType_LINK_TYPE_WAN: "wan", pb.LinkType_LINK_TYPE_EDGE: "edge"}
)

func fieldsOf(model string) []string {
	switch model {
	case BandwidthModel:
		return networkFields
	case CompressionModel:
		return payloadFields
	case AnomalyModel:
		return nodeFields
	}
	return consensusFields
}

// prepareFields maps each input to the request field it reads (-1: a custom field) and orders the checks.
func (v *version) prepareFields() error {
	known := fieldsOf(v.model)
	v.reqField = make([]int, len(v.inputs))
	for k, in := range v.inputs {
		v.reqField[k] = -1
		for f, name := range known {
			if name == in.name {
				v.reqField[k] = f
			}
		}
		custom := in.custom != "" && (v.model == AnomalyModel || v.model == LatencyModel)
		if v.reqField[k] < 0 && !custom {
			return refuse("input %s is not a field the %s requests carry", in.name, v.model)
		}
		if in.vocab != nil && v.model != CompressionModel && v.model != LatencyModel {
			return refuse("input %s: a categorical field the %s requests do not carry", in.name, v.model)
		}
	}
	windowed := v.model == BandwidthModel || v.model == LatencyModel ||
		(v.model == AnomalyModel && v.meta.Window > 1)
	for _, in := range v.inputs {
		if windowed && in.width != v.meta.Window || !windowed && in.width != 1 {
			return refuse("input %s takes %d values per item, the metadata's window is %d", in.name, in.width,
				v.meta.Window)
		}
	}
	for _, f := range v.meta.RawFields { // checks in the metadata's raw_fields order, as validate_raw
		v.checkOrder = append(v.checkOrder, v.byName[f.Name])
	}
	return nil
}

// badValue locates the first raw value a version cannot take.
type badValue struct {
	input, item, step int
	problem           string
}

// check returns the first value out of its raw field's range, or nil.
func (v *version) check(b *binding) *badValue {
	for _, k := range v.checkOrder {
		in := &v.inputs[k]
		if in.vocab != nil {
			for j, idx := range b.i64[k] {
				if idx < 0 {
					return &badValue{input: k, item: j / in.width, step: j % in.width}
				}
			}
			continue
		}
		lo, hi := in.field.lo(), in.field.hi()
		for j, x := range b.f64[k] {
			if x >= lo && x <= hi && !math.IsInf(x, 0) {
				continue
			}
			var problem string
			switch {
			case math.IsNaN(x) || math.IsInf(x, 0):
				problem = "expected a finite number, got " + pyG(x)
			case x < lo:
				problem = "expected >= " + pyG(lo) + ", got " + pyG(x)
			default:
				problem = "expected <= " + pyG(hi) + ", got " + pyG(x)
			}
			return &badValue{input: k, item: j / in.width, step: j % in.width, problem: problem}
		}
	}
	return nil
}

// unknownLabel is validate_raw's message for a categorical value outside the vocabulary.
func unknownLabel(in *input, value string) string {
	return fmt.Sprintf("unknown value '%s', expected one of %s", value, pyList(in.field.Vocabulary))
}

// pyList and pyDict write strings as Python's repr does, as the server's messages show them.
func pyList(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + w + "'"
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

func pyDict(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = "'" + k + "': '" + m[k] + "'"
	}
	return "{" + strings.Join(keys, ", ") + "}"
}

// pyG formats a number as Python's "{:g}" does.
func pyG(x float64) string {
	switch {
	case math.IsNaN(x):
		return "nan"
	case math.IsInf(x, 1):
		return "inf"
	case math.IsInf(x, -1):
		return "-inf"
	}
	return strconv.FormatFloat(x, 'g', 6, 64)
}

func named(field string) string {
	if strings.HasPrefix(field, customPrefix) {
		return "custom['" + field[len(customPrefix):] + "']"
	}
	return field
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func checkBatch(n int, field string, max int) error {
	if n == 0 {
		return invalid("%s: expected at least one item, got none", field)
	}
	if n > max {
		return invalid("%s: expected at most %d items, got %d", field, max, n)
	}
	return nil
}

func contextError(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return nil
}

// call runs the model on a filled binding: the caller's deadline, the model, the finiteness of what answers use.
func (v *version) call(ctx context.Context, b *binding, finite ...int) error {
	if err := contextError(ctx); err != nil {
		return err
	}
	if err := v.run(b); err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	return v.nonFinite(b, finite...)
}

func (v *version) ref() *pb.ModelRef { return &pb.ModelRef{Name: v.model, Version: v.meta.Version} }

// windows checks each sequence's length against the model's window and returns each one's offset (the index of
// the first sample it takes). path(i, -1) names sequence i.
func windows(lengths func(int) int, n, window, maxWindow int, path func(i, j int) string) ([]int, error) {
	offsets := make([]int, n)
	for i := 0; i < n; i++ {
		l := lengths(i)
		if l > maxWindow {
			return nil, invalid("%s: expected at most %d samples, got %d", path(i, -1), maxWindow, l)
		}
		if l < window {
			return nil, invalid("%s: expected at least %d samples (the model's window), got %d", path(i, -1),
				window, l)
		}
		offsets[i] = l - window
	}
	return offsets, nil
}

func seqPath(single bool, one, many string) func(i, j int) string {
	return func(i, j int) string {
		seq := one
		if !single {
			seq = many + "[" + strconv.Itoa(i) + "].samples"
		}
		if j < 0 {
			return seq
		}
		return seq + "[" + strconv.Itoa(j) + "]"
	}
}

// ------------------------------------------------------------------ bandwidth_predictor

func networkValue(s *pb.NetworkSample, f int) float64 {
	switch f {
	case 0:
		return s.GetBandwidthMbps()
	case 1:
		return s.GetLatencyMs()
	case 2:
		return s.GetPacketLoss()
	case 3:
		return s.GetJitterMs()
	case 4:
		return float64(s.GetTimeOfDay())
	}
	return float64(s.GetDayOfWeek())
}

// PredictBandwidth answers as the server's PredictBandwidth, without a prediction id.
func (r *Runtime) PredictBandwidth(ctx context.Context, req *pb.PredictBandwidthRequest) (*pb.PredictBandwidthResponse, error) {
	histories := [1]*pb.LinkHistory{req.GetHistory()}
	preds, ref, err := r.bandwidth(ctx, histories[:], req.GetModel(), true)
	if err != nil {
		return nil, err
	}
	return &pb.PredictBandwidthResponse{Prediction: preds[0], Model: ref}, nil
}

// PredictBandwidthBatch answers as the server's PredictBandwidthBatch, without prediction ids.
func (r *Runtime) PredictBandwidthBatch(ctx context.Context, req *pb.PredictBandwidthBatchRequest) (*pb.PredictBandwidthBatchResponse, error) {
	if err := checkBatch(len(req.GetHistories()), "histories", r.opts.maxBatch); err != nil {
		return nil, err
	}
	preds, ref, err := r.bandwidth(ctx, req.GetHistories(), req.GetModel(), false)
	if err != nil {
		return nil, err
	}
	return &pb.PredictBandwidthBatchResponse{Predictions: preds, Model: ref}, nil
}

func (r *Runtime) bandwidth(ctx context.Context, histories []*pb.LinkHistory, sel *pb.ModelSelector, single bool) ([]*pb.BandwidthPrediction, *pb.ModelRef, error) {
	v, err := r.acquire(BandwidthModel, sel)
	if err != nil {
		return nil, nil, err
	}
	defer v.releaseCall()
	w := v.meta.Window
	path := seqPath(single, "history.samples", "histories")
	offsets, err := windows(func(i int) int { return len(histories[i].GetSamples()) }, len(histories), w,
		r.opts.maxWindow, path)
	if err != nil {
		return nil, nil, err
	}
	b, err := v.bind(len(histories))
	if err != nil {
		return nil, nil, err
	}
	defer v.release(b)
	for i, h := range histories {
		for j, s := range h.GetSamples()[offsets[i]:] {
			for k, f := range v.reqField {
				b.f64[k][i*w+j] = networkValue(s, f)
			}
		}
	}
	if bad := v.check(b); bad != nil {
		return nil, nil, invalid("%s.%s: %s", path(bad.item, offsets[bad.item]+bad.step), v.inputs[bad.input].name,
			bad.problem)
	}
	rule := v.rule.(*bandwidthRule)
	if err := v.call(ctx, b, rule.checkedOut...); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	nowSeconds := float64(now.UnixNano()) / 1e9
	preds := make([]*pb.BandwidthPrediction, len(histories))
	for i, h := range histories {
		p := &pb.BandwidthPrediction{}
		if err := rule.answer(v, b, i, p); err != nil {
			return nil, nil, err
		}
		samples := h.GetSamples()
		rule.lastSent(p, samples[len(samples)-1])
		base := nowSeconds
		if ts := samples[len(samples)-1].GetTimestamp(); ts != nil {
			base = float64(ts.GetSeconds()) + float64(ts.GetNanos())/1e9
		}
		p.ValidUntil, p.PredictionTime = timestamp(base+rule.horizon), timestamp(nowSeconds)
		preds[i] = p
	}
	return preds, v.ref(), nil
}

// timestamp is convert.py timestamp: seconds as a Timestamp.
func timestamp(seconds float64) *timestamppb.Timestamp {
	whole := math.Floor(seconds)
	nanos := min(int64((seconds-whole)*1e9), 999_999_999)
	return &timestamppb.Timestamp{Seconds: int64(whole), Nanos: int32(nanos)}
}

// ------------------------------------------------------------------ compression_selector

// SelectCompression answers as the server's SelectCompression, without a prediction id. A payload sample's
// traits (entropy, zlib ratio) are computed here as the server computes them.
func (r *Runtime) SelectCompression(ctx context.Context, req *pb.SelectCompressionRequest) (*pb.SelectCompressionResponse, error) {
	links := [1]*pb.LinkState{req.GetLink()}
	payloads := [1]*pb.PayloadTraits{req.GetPayload()}
	var decision pb.CompressionDecision
	decisions := [1]*pb.CompressionDecision{&decision}
	ref, err := r.compression(ctx, links[:], payloads[:], decisions[:], req.GetModel(), true)
	if err != nil {
		return nil, err
	}
	return &pb.SelectCompressionResponse{Decision: &decision, Model: ref}, nil
}

// SelectCompressionBatch answers as the server's SelectCompressionBatch, without prediction ids.
func (r *Runtime) SelectCompressionBatch(ctx context.Context, req *pb.SelectCompressionBatchRequest) (*pb.SelectCompressionBatchResponse, error) {
	queries := req.GetQueries()
	if err := checkBatch(len(queries), "queries", r.opts.maxBatch); err != nil {
		return nil, err
	}
	links := make([]*pb.LinkState, len(queries))
	payloads := make([]*pb.PayloadTraits, len(queries))
	decisions := make([]*pb.CompressionDecision, len(queries))
	for i, q := range queries {
		links[i], payloads[i], decisions[i] = q.GetLink(), q.GetPayload(), &pb.CompressionDecision{}
	}
	ref, err := r.compression(ctx, links, payloads, decisions, req.GetModel(), false)
	if err != nil {
		return nil, err
	}
	return &pb.SelectCompressionBatchResponse{Decisions: decisions, Model: ref}, nil
}

func (r *Runtime) compression(ctx context.Context, links []*pb.LinkState, payloads []*pb.PayloadTraits, out []*pb.CompressionDecision, sel *pb.ModelSelector, single bool) (*pb.ModelRef, error) {
	v, err := r.acquire(CompressionModel, sel)
	if err != nil {
		return nil, err
	}
	defer v.releaseCall()
	prefix := func(i int) string {
		if single {
			return ""
		}
		return "queries[" + strconv.Itoa(i) + "]."
	}
	for i, link := range links {
		p := payloads[i]
		if _, known := linkTypes[link.GetLinkType()]; !known {
			return nil, invalid("%slink.link_type: expected one of ['LINK_TYPE_DC', 'LINK_TYPE_METRO', "+
				"'LINK_TYPE_WAN', 'LINK_TYPE_EDGE'], got %s", prefix(i), link.GetLinkType())
		}
		if len(p.GetSample()) == 0 && (p.EntropyBitsPerByte == nil || p.RecentCompressionRatio == nil) {
			return nil, invalid("%spayload: expected a sample, or both entropy_bits_per_byte and "+
				"recent_compression_ratio", prefix(i))
		}
	}
	b, err := v.bind(len(links))
	if err != nil {
		return nil, err
	}
	defer v.release(b)
	for i, link := range links {
		p := payloads[i]
		entropy, ratio := p.GetEntropyBitsPerByte(), p.GetRecentCompressionRatio()
		if sample := p.GetSample(); len(sample) > 0 {
			entropy, ratio = ByteEntropy(sample), SampleRatio(sample)
		}
		for k, f := range v.reqField {
			switch f {
			case 0:
				b.f64[k][i] = link.GetThroughputMbps()
			case 1:
				b.f64[k][i] = link.GetRttMs()
			case 2:
				b.f64[k][i] = link.GetPacketLoss()
			case 3:
				idx, ok := v.inputs[k].vocab[linkTypes[link.GetLinkType()]]
				if !ok {
					idx = -1
				}
				b.i64[k][i] = idx
			case 4:
				b.f64[k][i] = float64(p.GetSizeBytes())
			case 5:
				b.f64[k][i] = entropy
			case 6:
				b.f64[k][i] = ratio
			}
		}
	}
	if bad := v.check(b); bad != nil {
		in := &v.inputs[bad.input]
		name, ok := payloadPaths[in.name]
		if !ok {
			name = in.name
		}
		if in.vocab != nil {
			bad.problem = unknownLabel(in, linkTypes[links[bad.item].GetLinkType()])
		}
		return nil, invalid("%s%s: %s", prefix(bad.item), name, bad.problem)
	}
	rule := v.rule.(*compressionRule)
	if err := v.call(ctx, b, rule.out); err != nil {
		return nil, err
	}
	for i := range links {
		rule.answer(v, b, i, out[i])
	}
	return v.ref(), nil
}

// ------------------------------------------------------------------ reliability_detector

func nodeValue(m *pb.NodeMetrics, f int) float64 {
	switch f {
	case 0:
		return m.GetErrorRate()
	case 1:
		return m.GetTimeoutRate()
	case 2:
		return m.GetLatencyP50Ms()
	case 3:
		return m.GetLatencyP99Ms()
	case 4:
		return m.GetSlaViolations()
	case 5:
		return m.GetConnectionFailures()
	case 6:
		return m.GetPacketLossRate()
	case 7:
		return m.GetCpuUsage()
	case 8:
		return m.GetMemoryUsage()
	}
	return m.GetDiskIoMbps()
}

// DetectAnomaly answers as the server's DetectAnomaly, without a prediction id.
func (r *Runtime) DetectAnomaly(ctx context.Context, req *pb.DetectAnomalyRequest) (*pb.DetectAnomalyResponse, error) {
	if req.GetMetrics() == nil {
		return nil, invalid("metrics: expected the node's metric vector, got none")
	}
	metrics := [1]*pb.NodeMetrics{req.GetMetrics()}
	histories := [1]*pb.NodeHistory{req.GetHistory()}
	var verdict pb.AnomalyVerdict
	verdicts := [1]*pb.AnomalyVerdict{&verdict}
	ref, err := r.anomaly(ctx, metrics[:], histories[:], verdicts[:], req.GetModel(), true)
	if err != nil {
		return nil, err
	}
	return &pb.DetectAnomalyResponse{Verdict: &verdict, Model: ref}, nil
}

// DetectAnomalyBatch answers as the server's DetectAnomalyBatch, without prediction ids.
func (r *Runtime) DetectAnomalyBatch(ctx context.Context, req *pb.DetectAnomalyBatchRequest) (*pb.DetectAnomalyBatchResponse, error) {
	metrics := req.GetMetrics()
	if err := checkBatch(len(metrics), "metrics", r.opts.maxBatch); err != nil {
		return nil, err
	}
	verdicts := make([]*pb.AnomalyVerdict, len(metrics))
	for i := range verdicts {
		verdicts[i] = &pb.AnomalyVerdict{}
	}
	ref, err := r.anomaly(ctx, metrics, req.GetHistories(), verdicts, req.GetModel(), false)
	if err != nil {
		return nil, err
	}
	return &pb.DetectAnomalyBatchResponse{Verdicts: verdicts, Model: ref}, nil
}

func (r *Runtime) anomaly(ctx context.Context, metrics []*pb.NodeMetrics, histories []*pb.NodeHistory, out []*pb.AnomalyVerdict, sel *pb.ModelSelector, single bool) (*pb.ModelRef, error) {
	v, err := r.acquire(AnomalyModel, sel)
	if err != nil {
		return nil, err
	}
	defer v.releaseCall()
	w := max(v.meta.Window, 1)
	// Each item's sequence: its history (for a version with a window), then its own metric vector.
	past := func(i int) []*pb.NodeMetrics { return nil }
	var path func(i, j int) string
	var offsets []int
	if w == 1 {
		path = func(i, _ int) string {
			if single {
				return "metrics"
			}
			return "metrics[" + strconv.Itoa(i) + "]"
		}
		offsets = make([]int, len(metrics))
	} else {
		if !single && len(histories) != len(metrics) {
			return nil, invalid("histories: this model version judges each item against its history: expected "+
				"%d (one per item of metrics), got %d", len(metrics), len(histories))
		}
		past = func(i int) []*pb.NodeMetrics { return histories[i].GetSamples() }
		seq := seqPath(single, "history.samples", "histories")
		path = func(i, j int) string {
			if j == len(past(i)) {
				if single {
					return "metrics"
				}
				return "metrics[" + strconv.Itoa(i) + "]"
			}
			return seq(i, j)
		}
		for i := range metrics {
			if n := len(past(i)); n+1 < w {
				return nil, invalid("%s: expected at least %d earlier intervals (the model's window of %d with the "+
					"current one), got %d", path(i, -1), w-1, w, n)
			}
		}
		if offsets, err = windows(func(i int) int { return len(past(i)) + 1 }, len(metrics), w, r.opts.maxWindow+1,
			path); err != nil {
			return nil, err
		}
	}
	sample := func(i, j int) *pb.NodeMetrics { // sample j of item i's sequence
		if h := past(i); j < len(h) {
			return h[j]
		}
		return metrics[i]
	}
	b, err := v.bind(len(metrics))
	if err != nil {
		return nil, err
	}
	defer v.release(b)
	if err := fillCustom(v, b, len(metrics), w, offsets, path, func(i, j int) map[string]float64 {
		return sample(i, j).GetCustom()
	}); err != nil {
		return nil, err
	}
	for i := range metrics {
		for j := 0; j < w; j++ {
			m := sample(i, offsets[i]+j)
			for k, f := range v.reqField {
				if f >= 0 {
					b.f64[k][i*w+j] = nodeValue(m, f)
				}
			}
		}
	}
	if bad := v.check(b); bad != nil {
		return nil, invalid("%s.%s: %s", path(bad.item, offsets[bad.item]+bad.step), named(v.inputs[bad.input].name),
			bad.problem)
	}
	rule := v.rule.(*anomalyRule)
	if err := v.call(ctx, b, rule.score); err != nil {
		return nil, err
	}
	for i := range metrics {
		rule.answer(v, b, i, out[i])
	}
	return v.ref(), nil
}

// fillCustom writes the custom fields a version reads ("custom.<name>") from each sample's custom map, refusing
// the first sample without one (in the version's field order, then item and sample order, as convert.py).
func fillCustom(v *version, b *binding, n, w int, offsets []int, path func(i, j int) string,
	custom func(i, j int) map[string]float64) error {
	for k, in := range v.inputs {
		if in.custom == "" || v.reqField[k] >= 0 {
			continue
		}
		for i := 0; i < n; i++ {
			for j := 0; j < w; j++ {
				x, ok := custom(i, offsets[i]+j)[in.custom]
				if !ok {
					return invalid("%s.custom['%s']: missing (this model version reads it)", path(i, offsets[i]+j),
						in.custom)
				}
				b.f64[k][i*w+j] = x
			}
		}
	}
	return nil
}

// ------------------------------------------------------------------ consensus_latency

func consensusValue(s *pb.ConsensusSample, f int) float64 {
	switch f {
	case 0:
		return s.GetQueueDepth()
	case 1:
		return s.GetProposalsPending()
	case 2:
		return s.GetProposalsCommitted()
	case 3:
		return s.GetLatencyP50Ms()
	case 4:
		return s.GetLatencyP95Ms()
	case 5:
		return s.GetLatencyP99Ms()
	case 6:
		return s.GetLeaderChanges()
	case 7:
		return s.GetQuorumSize()
	}
	return s.GetActiveNodes()
}

func consensusLabel(s *pb.ConsensusSample, f int) string {
	switch f {
	case 9:
		return s.GetNetworkTier()
	case 10:
		return s.GetDwcpMode()
	}
	return s.GetConsensusType()
}

// DetectHighLatency answers as the server's DetectHighLatency, without a prediction id.
func (r *Runtime) DetectHighLatency(ctx context.Context, req *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error) {
	windows := [1]*pb.ConsensusWindow{req.GetWindow()}
	var verdict pb.LatencyVerdict
	verdicts := [1]*pb.LatencyVerdict{&verdict}
	ref, err := r.latency(ctx, windows[:], verdicts[:], req.GetModel(), true)
	if err != nil {
		return nil, err
	}
	return &pb.DetectHighLatencyResponse{Verdict: &verdict, Model: ref}, nil
}

// DetectHighLatencyBatch answers as the server's DetectHighLatencyBatch, without prediction ids.
func (r *Runtime) DetectHighLatencyBatch(ctx context.Context, req *pb.DetectHighLatencyBatchRequest) (*pb.DetectHighLatencyBatchResponse, error) {
	ws := req.GetWindows()
	if err := checkBatch(len(ws), "windows", r.opts.maxBatch); err != nil {
		return nil, err
	}
	verdicts := make([]*pb.LatencyVerdict, len(ws))
	for i := range verdicts {
		verdicts[i] = &pb.LatencyVerdict{}
	}
	ref, err := r.latency(ctx, ws, verdicts, req.GetModel(), false)
	if err != nil {
		return nil, err
	}
	return &pb.DetectHighLatencyBatchResponse{Verdicts: verdicts, Model: ref}, nil
}

func (r *Runtime) latency(ctx context.Context, ws []*pb.ConsensusWindow, out []*pb.LatencyVerdict, sel *pb.ModelSelector, single bool) (*pb.ModelRef, error) {
	v, err := r.acquire(LatencyModel, sel)
	if err != nil {
		return nil, err
	}
	defer v.releaseCall()
	w := v.meta.Window
	path := seqPath(single, "window.samples", "windows")
	offsets, err := windows(func(i int) int { return len(ws[i].GetSamples()) }, len(ws), w, r.opts.maxWindow, path)
	if err != nil {
		return nil, err
	}
	b, err := v.bind(len(ws))
	if err != nil {
		return nil, err
	}
	defer v.release(b)
	if err := fillCustom(v, b, len(ws), w, offsets, path, func(i, j int) map[string]float64 {
		return ws[i].GetSamples()[j].GetCustom()
	}); err != nil {
		return nil, err
	}
	for i, win := range ws {
		for j, s := range win.GetSamples()[offsets[i]:] {
			for k, f := range v.reqField {
				switch {
				case f < 0:
				case f >= 9:
					idx, ok := v.inputs[k].vocab[consensusLabel(s, f)]
					if !ok {
						idx = -1
					}
					b.i64[k][i*w+j] = idx
				default:
					b.f64[k][i*w+j] = consensusValue(s, f)
				}
			}
		}
	}
	if bad := v.check(b); bad != nil {
		in := &v.inputs[bad.input]
		if in.vocab != nil {
			bad.problem = unknownLabel(in, consensusLabel(ws[bad.item].GetSamples()[offsets[bad.item]+bad.step],
				v.reqField[bad.input]))
		}
		return nil, invalid("%s.%s: %s", path(bad.item, offsets[bad.item]+bad.step), named(in.name), bad.problem)
	}
	rule := v.rule.(*latencyRule)
	finite := []int{rule.score, rule.errors}
	if rule.reconstruction >= 0 {
		finite = []int{rule.reconstruction}
	}
	if err := v.call(ctx, b, finite...); err != nil {
		return nil, err
	}
	for i := range ws {
		rule.answer(v, b, i, out[i])
	}
	return v.ref(), nil
}
