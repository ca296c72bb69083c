package prediction

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// Sampler measures a link once; a DataCollector started with one calls it every collect interval.
type Sampler func() (NetworkSample, error)

// DataCollector keeps the recent samples of a link (DWCP's type and method set). DWCP's collector measured the
// network itself; this one is given its samples, by AddSample or by the Sampler set with SetSampler, because
// how to measure a link is the caller's business, not the model service's.
type DataCollector struct {
	collectInterval time.Duration
	maxSamples      int

	mu      sync.RWMutex
	samples []NetworkSample
	sampler Sampler
	errors  uint64
	stop    chan struct{}
}

// NewDataCollector keeps the last maxSamples samples; a Sampler, if set, is called every collectInterval.
func NewDataCollector(collectInterval time.Duration, maxSamples int) *DataCollector {
	return &DataCollector{collectInterval: collectInterval, maxSamples: max(maxSamples, 1)}
}

// SetSampler sets the function Start calls every collect interval.
func (c *DataCollector) SetSampler(s Sampler) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sampler = s
}

// AddSample adds a measured sample.
func (c *DataCollector) AddSample(s NetworkSample) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.samples = append(c.samples, s)
	if len(c.samples) > c.maxSamples {
		c.samples = append([]NetworkSample(nil), c.samples[len(c.samples)-c.maxSamples:]...)
	}
}

// Start calls the Sampler (if any) every collect interval until Stop. Calling it again does nothing.
func (c *DataCollector) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stop != nil || c.collectInterval <= 0 {
		return
	}
	c.stop = make(chan struct{})
	go c.collect(c.stop)
}

func (c *DataCollector) collect(stop chan struct{}) {
	ticker := time.NewTicker(c.collectInterval)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		c.mu.RLock()
		sampler := c.sampler
		c.mu.RUnlock()
		if sampler == nil {
			continue
		}
		if s, err := sampler(); err == nil {
			c.AddSample(s)
		} else {
			c.mu.Lock()
			c.errors++
			c.mu.Unlock()
		}
	}
}

// Stop ends the collection Start began.
func (c *DataCollector) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stop != nil {
		close(c.stop)
		c.stop = nil
	}
}

// GetRecentSamples returns a copy of the last n samples (fewer when there are fewer), oldest first.
func (c *DataCollector) GetRecentSamples(n int) []NetworkSample {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n = max(0, min(n, len(c.samples)))
	return append([]NetworkSample{}, c.samples[len(c.samples)-n:]...)
}

// GetSamplesByTimeRange returns the samples strictly between start and end.
func (c *DataCollector) GetSamplesByTimeRange(start, end time.Time) []NetworkSample {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := []NetworkSample{}
	for _, s := range c.samples {
		if s.Timestamp.After(start) && s.Timestamp.Before(end) {
			out = append(out, s)
		}
	}
	return out
}

// ExportForTraining writes the samples as a CSV in the training schema of bandwidth_predictor (docs/data.md:
// link_id, timestamp, bandwidth_mbps, latency_ms, packet_loss, jitter_ms), ready for
// `dwcp-inference train bandwidth --data PATH`.
func (c *DataCollector) ExportForTraining(outputPath string) error {
	samples := c.GetRecentSamples(c.maxSamples)
	f, err := os.Create(outputPath)
	if err != nil {
		return fmt.Errorf("prediction: export: %w", err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "link_id,timestamp,bandwidth_mbps,latency_ms,packet_loss,jitter_ms")
	for _, s := range samples {
		link := s.NodeID + "->" + s.PeerID
		fmt.Fprintf(w, "%s,%s,%s,%s,%s,%s\n", strconv.Quote(link), s.Timestamp.UTC().Format(time.RFC3339Nano),
			num(s.BandwidthMbps), num(s.LatencyMs), num(s.PacketLoss), num(s.JitterMs))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("prediction: export: %w", err)
	}
	return f.Close()
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// GetStatistics summarises the samples held.
func (c *DataCollector) GetStatistics() DataStatistics {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if len(c.samples) == 0 {
		return DataStatistics{}
	}
	st := DataStatistics{SampleCount: len(c.samples), TimeRange: TimeRange{Start: c.samples[0].Timestamp,
		End: c.samples[len(c.samples)-1].Timestamp}, MinBandwidth: c.samples[0].BandwidthMbps}
	for _, s := range c.samples {
		st.AvgBandwidth += s.BandwidthMbps
		st.AvgLatency += s.LatencyMs
		st.AvgPacketLoss += s.PacketLoss
		st.AvgJitter += s.JitterMs
		st.MinBandwidth = min(st.MinBandwidth, s.BandwidthMbps)
		st.MaxBandwidth = max(st.MaxBandwidth, s.BandwidthMbps)
	}
	n := float64(len(c.samples))
	st.AvgBandwidth, st.AvgLatency, st.AvgPacketLoss, st.AvgJitter = st.AvgBandwidth/n, st.AvgLatency/n,
		st.AvgPacketLoss/n, st.AvgJitter/n
	return st
}
