package consensus

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	pb "github.com/dwcp/inference/clients/go/gen/dwcp/inference/v1"
	"github.com/dwcp/inference/clients/go/inference"
	"github.com/dwcp/inference/clients/go/internal/imputation"
)

// Window is the number of rounds the consensus_latency model judges at once (its metadata's window).
const Window = 20

// TargetEnv names the environment variable that gives the service's address when no option does.
const TargetEnv = "DWCP_INFERENCE_TARGET"

const ruleVersion = "rule:dwcp_v3_statistical"

// ConsensusState is what the cluster's consensus layer measures besides each round's latency: the
// consensus_latency model reads it with every round (an addition to DWCP's API; DWCP's CheckConsensusLatency
// takes the latency alone). Until UpdateConsensusState is called the model is not asked (DWCP's rule judges).
// QuorumSize, ActiveNodes, LatencyP95Ms or LatencyP99Ms left 0 — none of which a measurement gives as 0 — are
// unmeasured: for them the detector sends what the serving version's metadata says to (its `imputation`
// section, e.g. the median of the training data's normal rows; from the in-process runtime's version, or the
// service's metadata.json fetched once per version), or 0 when no metadata says ("not imputed: no metadata"),
// and each Anomaly lists them (Imputed: the names; Imputation: value, how, version). QueueDepth,
// ProposalsPending, ProposalsCommitted and LeaderChanges are counts for which 0 is a measurement.
type ConsensusState struct {
	QueueDepth, ProposalsPending, ProposalsCommitted, LeaderChanges float64
	QuorumSize, ActiveNodes                                         float64
	LatencyP95Ms, LatencyP99Ms                                      float64
}

// ImputedField says what was sent for an unmeasured field: Value, and How it was derived (NoMetadata: sent as 0).
type ImputedField = imputation.Imputed

// NoMetadata is the How of a field sent as 0 because no version metadata said what to send.
const NoMetadata = imputation.NoMetadata

func (s *ConsensusState) set(field string, v float64) {
	switch field {
	case "quorum_size":
		s.QuorumSize = v
	case "active_nodes":
		s.ActiveNodes = v
	case "latency_p95_ms":
		s.LatencyP95Ms = v
	case "latency_p99_ms":
		s.LatencyP99Ms = v
	}
}

func (s ConsensusState) unmeasured() []string {
	var out []string
	for _, f := range []struct {
		name  string
		value float64
	}{{"quorum_size", s.QuorumSize}, {"active_nodes", s.ActiveNodes}, {"latency_p95_ms", s.LatencyP95Ms},
		{"latency_p99_ms", s.LatencyP99Ms}} {
		if f.value == 0 {
			out = append(out, f.name)
		}
	}
	return out
}

// Option says where the consensus_latency model is. DWCP's constructor takes none; these are extra, trailing
// arguments.
type Option func(*options)

type options struct {
	client     inference.Client
	target     string
	clientOpts []inference.Option
	modelPath  string
	local      inference.LocalConfig
	cacheDir   string
	deployment inference.ConsensusDeployment
	order      []inference.Source
	metrics    *inference.ChainMetrics
}

// WithClient makes the detector ask c (the caller keeps owning it).
func WithClient(c inference.Client) Option { return func(o *options) { o.client = c } }

// WithTarget names the service (default $DWCP_INFERENCE_TARGET, else 127.0.0.1:50051).
func WithTarget(target string) Option { return func(o *options) { o.target = target } }

// WithClientOptions passes options (TLS, timeouts...) to the client the detector makes.
func WithClientOptions(opts ...inference.Option) Option {
	return func(o *options) { o.clientOpts = append(o.clientOpts, opts...) }
}

// WithModelPath runs the model at path (a repository, or a consensus_latency model or version directory)
// in-process through the registered local runtime (import the embedded package).
func WithModelPath(path string) Option { return func(o *options) { o.modelPath = path } }

// WithLocalCache runs the service's consensus_latency versions in-process: synced from the service (WithTarget,
// $DWCP_INFERENCE_TARGET or 127.0.0.1:50051) into dir, they answer first, the service second, DWCP's rule last,
// following the service's promotes. The local runtime must be registered (import the embedded package). The
// constructor waits a few seconds at most for the first sync; the cache answers while the service is down, also
// after a restart. It replaces WithModelPath.
func WithLocalCache(dir string) Option { return func(o *options) { o.cacheDir = dir } }

// WithLocalConfig passes settings (the libonnxruntime path) to the local runtime.
func WithLocalConfig(cfg inference.LocalConfig) Option { return func(o *options) { o.local = cfg } }

// WithDeployment says which cluster the rounds come from (default inference.DefaultDeployment()).
func WithDeployment(d inference.ConsensusDeployment) Option {
	return func(o *options) { o.deployment = d }
}

// WithSourceOrder sets the sources asked and their order (default embedded, remote, rule).
func WithSourceOrder(order ...inference.Source) Option {
	return func(o *options) { o.order = append([]inference.Source(nil), order...) }
}

// WithChainMetrics counts answers and fallbacks into m (shared between drop-ins, registered once).
func WithChainMetrics(m *inference.ChainMetrics) Option { return func(o *options) { o.metrics = m } }

func newOptions(opts []Option) options {
	o := options{deployment: inference.DefaultDeployment()}
	for _, opt := range opts {
		opt(&o)
	}
	if o.metrics == nil {
		o.metrics = inference.NewChainMetrics()
	}
	return o
}

// consensusModel asks the consensus_latency model about the window of recent rounds.
type consensusModel struct {
	ad         *AnomalyDetector
	deployment inference.ConsensusDeployment
	metrics    *inference.ChainMetrics
	chain      *inference.Chain // the configured sources
	ruleOnly   *inference.Chain // while there is no window the model can judge
	client     inference.Client
	owned      bool
	local      inference.LocalRuntime
	imputer    *imputation.Imputer

	mu         sync.Mutex
	state      *ConsensusState
	window     []*pb.ConsensusSample
	lastSource inference.Source
	lastErr    error
	sources    map[inference.Source]uint64
}

func newConsensusModel(ad *AnomalyDetector, o options, logger *zap.Logger) *consensusModel {
	m := &consensusModel{ad: ad, deployment: o.deployment, metrics: o.metrics, sources: map[inference.Source]uint64{}}
	rule := inference.Provider{Source: inference.SourceRule, Answerer: consensusRule{ad: ad}}
	providers := []inference.Provider{rule}
	if o.modelPath != "" && o.cacheDir == "" {
		local, err := inference.OpenLocal(o.modelPath, o.local)
		if err != nil {
			m.lastErr = fmt.Errorf("consensus: model path: %w", err)
			logger.Error("consensus_latency model not run in-process", zap.Error(err))
		} else {
			m.local = local
			providers = append(providers, inference.Provider{Source: inference.SourceEmbedded, Answerer: local})
		}
	}
	m.client = o.client
	if m.client == nil {
		target := o.target
		if target == "" {
			target = os.Getenv(TargetEnv)
		}
		if target == "" && m.local == nil {
			target = "127.0.0.1:50051"
		}
		if target != "" {
			c, err := inference.New(append([]inference.Option{inference.WithTarget(target)}, o.clientOpts...)...)
			if err != nil {
				logger.Error("consensus_latency service not asked", zap.String("target", target), zap.Error(err))
			} else {
				m.client, m.owned = c, true
			}
		}
	}
	if m.client != nil {
		providers = append(providers, inference.Provider{Source: inference.SourceRemote,
			Answerer: inference.Remote(m.client)})
		if o.cacheDir != "" {
			cfg := o.local.SyncedFrom(m.client.Target(), o.clientOpts, o.cacheDir, "consensus_latency")
			if local, err := inference.OpenLocal(o.cacheDir, cfg); err != nil {
				m.lastErr = fmt.Errorf("consensus: local cache: %w", err)
				logger.Error("consensus_latency model not run in-process", zap.Error(err))
			} else {
				m.local = local
				providers = append(providers, inference.Provider{Source: inference.SourceEmbedded, Answerer: local})
			}
		}
	}
	var dial func() (grpc.ClientConnInterface, func() error, error)
	if m.client != nil && m.client.Target() != "" {
		target := m.client.Target()
		dial = func() (grpc.ClientConnInterface, func() error, error) {
			conn, err := inference.Dial(append([]inference.Option{inference.WithTarget(target)}, o.clientOpts...)...)
			if err != nil {
				return nil, nil, err
			}
			return conn, conn.Close, nil
		}
	}
	m.imputer = imputation.New("consensus_latency", m.local, dial)
	chainOpts := []inference.ChainOption{inference.WithChainMetrics(o.metrics)}
	if o.order != nil {
		chainOpts = append(chainOpts, inference.WithOrder(o.order...))
	}
	var err error
	if m.chain, err = inference.NewChain(providers, chainOpts...); err != nil {
		logger.Error("consensus: no model source in the order given; DWCP's rule judges", zap.Error(err))
	}
	m.ruleOnly, _ = inference.NewChain([]inference.Provider{rule}, inference.WithChainMetrics(o.metrics))
	if m.chain == nil {
		m.chain = m.ruleOnly
	}
	return m
}

// UpdateConsensusState records the cluster's latest consensus measurements (see ConsensusState).
func (ad *AnomalyDetector) UpdateConsensusState(s ConsensusState) {
	ad.model.mu.Lock()
	defer ad.model.mu.Unlock()
	ad.model.state = &s
}

// LastSource says what judged the last CheckConsensusLatency, and why it returned nil when no source could
// (DWCP's signature has no error).
func (ad *AnomalyDetector) LastSource() (inference.Source, error) {
	ad.model.mu.Lock()
	defer ad.model.mu.Unlock()
	return ad.model.lastSource, ad.model.lastErr
}

// Metrics is the consensus checks' answer and fallback counters, a prometheus.Collector to register.
func (ad *AnomalyDetector) Metrics() *inference.ChainMetrics { return ad.model.metrics }

// Sources lists the sources asked for a full window, in order.
func (ad *AnomalyDetector) Sources() []inference.Source { return ad.model.chain.Sources() }

func (m *consensusModel) check(latencyMs float64) *Anomaly {
	ctx, cancel := context.WithTimeout(m.ad.ctx, 5*time.Second)
	defer cancel()
	m.mu.Lock()
	var state *ConsensusState
	if m.state != nil {
		copied := *m.state
		state = &copied
	}
	m.mu.Unlock()
	var unmeasured []string
	var imputed []imputation.Imputed
	if state != nil { // what the metadata says to send for the fields not measured (outside the lock: it may fetch)
		unmeasured = state.unmeasured()
		imputed = m.imputer.Fill(ctx, unmeasured, state.set)
	}
	m.mu.Lock()
	chain, window := m.ruleOnly, []*pb.ConsensusSample{{LatencyP50Ms: latencyMs}}
	full := false
	if s := state; s != nil {
		m.window = append(m.window, &pb.ConsensusSample{QueueDepth: s.QueueDepth, ProposalsPending: s.ProposalsPending,
			ProposalsCommitted: s.ProposalsCommitted, LatencyP50Ms: latencyMs, LatencyP95Ms: s.LatencyP95Ms,
			LatencyP99Ms: s.LatencyP99Ms, LeaderChanges: s.LeaderChanges, QuorumSize: s.QuorumSize,
			ActiveNodes: s.ActiveNodes, NetworkTier: m.deployment.NetworkTier, DwcpMode: m.deployment.DWCPMode,
			ConsensusType: m.deployment.ConsensusType})
		if len(m.window) > Window {
			m.window = m.window[len(m.window)-Window:]
		}
		if len(m.window) == Window {
			chain, window, full = m.chain, append([]*pb.ConsensusSample(nil), m.window...), true
		}
	}
	m.mu.Unlock()
	if !full {
		unmeasured, imputed = nil, nil
	}
	resp, source, err := chain.DetectHighLatency(ctx, &pb.DetectHighLatencyRequest{
		Window: &pb.ConsensusWindow{Samples: window}})
	m.mu.Lock()
	m.lastSource, m.lastErr = source, err
	if err == nil {
		m.sources[source]++
	}
	m.mu.Unlock()
	if err == nil && source != inference.SourceRule {
		m.imputer.Observe(resp.GetModel().GetVersion()) // the next rounds impute from the version that answers
	}
	if err != nil || !resp.GetVerdict().GetIsHighLatency() {
		return nil
	}
	return m.anomaly(latencyMs, resp, source, unmeasured, imputed)
}

func (m *consensusModel) anomaly(latencyMs float64, resp *pb.DetectHighLatencyResponse, source inference.Source,
	unmeasured []string, imputed []imputation.Imputed) *Anomaly {
	ad, v := m.ad, resp.GetVerdict()
	mean, sd := ad.consensusModel.stats()
	deviation := ad.consensusModel.calculateDeviation(latencyMs)
	a := &Anomaly{Timestamp: time.Now(), Component: "acp", Metric: "consensus_latency", Value: latencyMs,
		Expected: mean, Deviation: deviation, Source: source,
		ModelVersion: resp.GetModel().GetName() + ":" + resp.GetModel().GetVersion()}
	if source != inference.SourceRule {
		a.Imputed, a.Imputation = unmeasured, imputed
	}
	if source == inference.SourceRule {
		a.Confidence, a.Severity = ad.calculateConfidence(deviation, ad.config.ConsensusThreshold),
			ad.calculateSeverity(deviation)
		a.Description = fmt.Sprintf("Consensus timeout anomaly: %.2f ms (expected %.2f ± %.2f)", latencyMs, mean, sd)
		return a
	}
	// The model's score is the window's reconstruction error over its threshold: confidence 0.5 at the
	// threshold towards 1, severity by how far past it.
	ratio := v.GetReconstructionError() / v.GetThreshold()
	a.Confidence = 1 - 0.5/ratio
	switch {
	case ratio >= 3:
		a.Severity = "critical"
	case ratio >= 2:
		a.Severity = "high"
	case ratio >= 1.5:
		a.Severity = "medium"
	default:
		a.Severity = "low"
	}
	top := ""
	if fe := v.GetFeatureErrors(); len(fe) > 0 {
		top = ", most off: " + fe[0].GetFeature()
	}
	a.Description = fmt.Sprintf("Consensus high-latency episode: %.2f ms; reconstruction error %.3g >= %.3g (%s%s)",
		latencyMs, v.GetReconstructionError(), v.GetThreshold(), a.ModelVersion, top)
	return a
}

func (m *consensusModel) sourceCounts() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]uint64{}
	for s, n := range m.sources {
		out[string(s)] = n
	}
	return out
}

func (m *consensusModel) close() error {
	err := m.imputer.Close()
	if m.client != nil && m.owned {
		if e := m.client.Close(); err == nil {
			err = e
		}
	}
	if m.local != nil {
		if e := m.local.Close(); err == nil {
			err = e
		}
	}
	return err
}

// consensusRule is DWCP's statistical rule as the chain's last source: the latest round's latency (the
// window's last p50) over ConsensusThreshold standard deviations of the recent rounds, with enough confidence.
type consensusRule struct {
	inference.UnimplementedAnswerer
	ad *AnomalyDetector
}

func (r consensusRule) DetectHighLatency(_ context.Context, req *pb.DetectHighLatencyRequest) (*pb.DetectHighLatencyResponse, error) {
	samples := req.GetWindow().GetSamples()
	verdict := &pb.LatencyVerdict{Threshold: r.ad.config.ConsensusThreshold}
	if n := len(samples); n > 0 && r.ad.consensusModel.hasEnoughSamples() {
		deviation := r.ad.consensusModel.calculateDeviation(samples[n-1].GetLatencyP50Ms())
		verdict.ReconstructionError = deviation
		verdict.IsHighLatency = deviation > r.ad.config.ConsensusThreshold &&
			r.ad.calculateConfidence(deviation, r.ad.config.ConsensusThreshold) >= r.ad.config.MinAnomalyConfidence
	}
	return &pb.DetectHighLatencyResponse{Verdict: verdict, Model: &pb.ModelRef{Name: "rule",
		Version: "dwcp_v3_statistical"}}, nil
}
