package inference

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// ChainMetrics counts what chains answered, per RPC and source. It is a prometheus.Collector: register it
// once (prometheus.MustRegister(chain.Metrics())); several chains may share one (WithChainMetrics).
//
//	dwcp_client_answers_total{rpc,source}          calls a source answered
//	dwcp_client_fallbacks_total{rpc,source,reason} calls a source could not answer, passed to the next one
//	                                               (reason: unavailable, deadline_exceeded, resource_exhausted,
//	                                               not_found, unimplemented, not_loaded)
//	dwcp_client_errors_total{rpc,source,code}      calls that failed at a source with an error the next source
//	                                               would not change (invalid_argument...), returned to the caller
//	dwcp_client_unanswered_total{rpc}              calls no source could answer
type ChainMetrics struct {
	answers, fallbacks, errors, unanswered *prometheus.CounterVec
}

var _ prometheus.Collector = (*ChainMetrics)(nil)

// NewChainMetrics returns zeroed counters.
func NewChainMetrics() *ChainMetrics {
	return &ChainMetrics{
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dwcp_client_answers_total",
			Help: "Calls a source answered, per RPC and source (embedded, remote, rule)."}, []string{"rpc", "source"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dwcp_client_fallbacks_total",
			Help: "Calls a source could not answer and passed to the next source, per RPC, source and reason."},
			[]string{"rpc", "source", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dwcp_client_errors_total",
			Help: "Calls that failed at a source with an error returned to the caller, per RPC, source and code."},
			[]string{"rpc", "source", "code"}),
		unanswered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dwcp_client_unanswered_total",
			Help: "Calls no source of the chain could answer, per RPC."}, []string{"rpc"}),
	}
}

func (m *ChainMetrics) vecs() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{m.answers, m.fallbacks, m.errors, m.unanswered}
}

// Describe implements prometheus.Collector.
func (m *ChainMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range m.vecs() {
		v.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *ChainMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, v := range m.vecs() {
		v.Collect(ch)
	}
}

// Answers is the count of calls of rpc that source answered (for tests and logs; Prometheus reads Collect).
func (m *ChainMetrics) Answers(rpc string, source Source) float64 {
	return counterValue(m.answers.WithLabelValues(rpc, string(source)))
}

// Fallbacks is the count of calls of rpc that source passed on for reason.
func (m *ChainMetrics) Fallbacks(rpc string, source Source, reason string) float64 {
	return counterValue(m.fallbacks.WithLabelValues(rpc, string(source), reason))
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}
