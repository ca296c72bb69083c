package prediction

import (
	"strings"
	"testing"

	"github.com/dwcp/inference/clients/go/internal/servertest"
)

// A refused outcome report is counted and its error kept, not dropped.
func TestRefusedOutcomeIsCounted(t *testing.T) {
	p, err := NewLSTMPredictor(servertest.Target())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h := make([]NetworkSample, 24)
	for i := range h {
		h[i] = NetworkSample{BandwidthMbps: 500, LatencyMs: 20, PacketLoss: 0.001, JitterMs: 2, TimeOfDay: 9, DayOfWeek: 2}
	}
	pred, err := p.Predict(h)
	if err != nil {
		t.Fatal(err)
	}
	p.UpdateActual(pred.ValidUntil, NetworkSample{BandwidthMbps: 480})
	if n, err := p.OutcomeErrors(); n != 0 || err != nil {
		t.Fatalf("an accepted outcome counted as an error: %d, %v", n, err)
	}
	if _, err := p.Predict(h); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.pending[0].id = p.pending[0].id[:len(p.pending[0].id)-4] + "AAAA" // as a replica with another key sees it
	p.mu.Unlock()
	p.UpdateActual(pred.ValidUntil, NetworkSample{BandwidthMbps: 480})
	n, err := p.OutcomeErrors()
	if n != 1 || err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("a refused outcome: counted %d, error %v", n, err)
	}
}
