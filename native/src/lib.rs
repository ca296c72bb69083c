//! Inference request bytes to raw columns, for `dwcp_inference.services.decode`.
//!
//! Each `decode_<rpc>` function parses one RPC's request bytes with prost (memory-safe, no Python object per
//! sample) and answers a tuple of flat buffers (native-endian f64 / i64 / i32 bytes) that the Python side views
//! with numpy, or `None` when prost refuses the bytes. On `None` the Python side asks the protobuf runtime to
//! decide (it keeps some input prost refuses, e.g. a known field with another wire type, as an unknown field), so
//! both decoders answer alike by construction. So does a request with entries in a `custom` map: the protobuf
//! runtime drops a map entry that carries an unknown field where prost keeps it, so such requests are `None`
//! too (the python path decodes them; the bundled versions read no custom field). Values are not judged here:
//! validation lives in Python, once.
use std::collections::HashMap;

use prost::Message;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

#[allow(clippy::all, dead_code)]
mod proto {
    include!("gen/dwcp.inference.v1.rs");
}
use proto::*;

mod encode;
mod front;
mod ids;
mod wire;

/// Columns of a batch of sequences of one sample type (see decode.Samples).
#[derive(Default)]
struct Columns {
    numbers: Vec<f64>,
    lengths: Vec<i64>,
    has_custom: bool,
    labels: Vec<Interned>,
    ts_has: Vec<u8>,
    ts_seconds: Vec<i64>,
    ts_nanos: Vec<i32>,
}

/// One string field of every sample: its distinct values and each sample's code.
#[derive(Default)]
struct Interned {
    index: HashMap<String, i32>,
    vocabulary: Vec<String>,
    codes: Vec<i32>,
}

impl Interned {
    fn push(&mut self, value: &str) {
        let code = match self.index.get(value) {
            Some(&c) => c,
            None => {
                let c = self.vocabulary.len() as i32;
                self.index.insert(value.to_owned(), c);
                self.vocabulary.push(value.to_owned());
                c
            }
        };
        self.codes.push(code);
    }
}

impl Columns {
    fn with_labels(n: usize) -> Self {
        Columns {
            labels: (0..n).map(|_| Interned::default()).collect(),
            ..Default::default()
        }
    }

    fn custom(&mut self, map: &HashMap<String, f64>) {
        self.has_custom |= !map.is_empty();
    }

    fn last_timestamp(&mut self, ts: Option<&prost_types::Timestamp>) {
        self.ts_has.push(ts.is_some() as u8);
        self.ts_seconds.push(ts.map_or(0, |t| t.seconds));
        self.ts_nanos.push(ts.map_or(0, |t| t.nanos));
    }

    fn into_py<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let labels = PyList::empty(py);
        for l in &self.labels {
            labels.append((PyList::new(py, &l.vocabulary)?, bytes(py, &l.codes)))?;
        }
        let ts = (
            bytes(py, &self.ts_has),
            bytes(py, &self.ts_seconds),
            bytes(py, &self.ts_nanos),
        );
        (bytes(py, &self.numbers), bytes(py, &self.lengths), labels, ts).into_pyobject(py)
    }
}

trait Plain: Copy {
    fn put(self, out: &mut Vec<u8>);
}
macro_rules! plain {
    ($($t:ty),*) => { $(impl Plain for $t { fn put(self, out: &mut Vec<u8>) { out.extend_from_slice(&self.to_ne_bytes()) } })* };
}
plain!(f64, i64, i32, u8);

fn bytes<'py, T: Plain>(py: Python<'py>, values: &[T]) -> Bound<'py, PyBytes> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(values));
    for v in values {
        v.put(&mut out);
    }
    PyBytes::new(py, &out)
}

fn selector(m: &Option<ModelSelector>) -> (String, String) {
    m.as_ref()
        .map_or_else(Default::default, |s| (s.version.clone(), s.label.clone()))
}

fn network(histories: &[&LinkHistory]) -> Columns {
    let mut c = Columns::default();
    let total: usize = histories.iter().map(|h| h.samples.len()).sum();
    c.numbers.reserve(total * 6);
    for h in histories {
        c.lengths.push(h.samples.len() as i64);
        for s in &h.samples {
            c.numbers.extend_from_slice(&[
                s.bandwidth_mbps,
                s.latency_ms,
                s.packet_loss,
                s.jitter_ms,
                s.time_of_day as f64,
                s.day_of_week as f64,
            ]);
        }
        c.last_timestamp(h.samples.last().and_then(|s| s.timestamp.as_ref()));
    }
    c
}

fn node_row(c: &mut Columns, m: &NodeMetrics) {
    c.numbers.extend_from_slice(&[
        m.error_rate,
        m.timeout_rate,
        m.latency_p50_ms,
        m.latency_p99_ms,
        m.sla_violations,
        m.connection_failures,
        m.packet_loss_rate,
        m.cpu_usage,
        m.memory_usage,
        m.disk_io_mbps,
    ]);
    c.custom(&m.custom);
}

fn node_histories(histories: &[&NodeHistory]) -> Columns {
    let mut c = Columns::default();
    for h in histories {
        c.lengths.push(h.samples.len() as i64);
        for m in &h.samples {
            node_row(&mut c, m);
        }
    }
    c
}

fn node_metrics(metrics: &[&NodeMetrics]) -> Columns {
    let mut c = Columns::default();
    for m in metrics {
        c.lengths.push(1);
        node_row(&mut c, m);
    }
    c
}

fn consensus(windows: &[&ConsensusWindow]) -> Columns {
    let mut c = Columns::with_labels(3);
    for w in windows {
        c.lengths.push(w.samples.len() as i64);
        for s in &w.samples {
            c.numbers.extend_from_slice(&[
                s.queue_depth,
                s.proposals_pending,
                s.proposals_committed,
                s.latency_p50_ms,
                s.latency_p95_ms,
                s.latency_p99_ms,
                s.leader_changes,
                s.quorum_size,
                s.active_nodes,
            ]);
            c.labels[0].push(&s.network_tier);
            c.labels[1].push(&s.dwcp_mode);
            c.labels[2].push(&s.consensus_type);
            c.custom(&s.custom);
        }
    }
    c
}

/// (link [B,3] f64: throughput, rtt, loss; link_type [B] i32; size [B] i64; samples [bytes];
///  entropy [B] f64, has_entropy [B] u8, ratio [B] f64, has_ratio [B] u8)
fn queries<'py>(
    py: Python<'py>,
    items: &[(Option<&LinkState>, Option<&PayloadTraits>)],
) -> PyResult<Bound<'py, PyTuple>> {
    let (mut link, mut kind, mut size, mut ent, mut has_ent, mut ratio, mut has_ratio) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let samples = PyList::empty(py);
    let no_link = LinkState::default();
    let no_payload = PayloadTraits::default();
    for (l, p) in items {
        let l = l.unwrap_or(&no_link);
        let p = p.unwrap_or(&no_payload);
        link.extend_from_slice(&[l.throughput_mbps, l.rtt_ms, l.packet_loss]);
        kind.push(l.link_type);
        size.push(p.size_bytes);
        samples.append(PyBytes::new(py, &p.sample))?;
        ent.push(p.entropy_bits_per_byte.unwrap_or(0.0));
        has_ent.push(p.entropy_bits_per_byte.is_some() as u8);
        ratio.push(p.recent_compression_ratio.unwrap_or(0.0));
        has_ratio.push(p.recent_compression_ratio.is_some() as u8);
    }
    (
        bytes(py, &link),
        bytes(py, &kind),
        bytes(py, &size),
        samples,
        bytes(py, &ent),
        bytes(py, &has_ent),
        bytes(py, &ratio),
        bytes(py, &has_ratio),
    )
        .into_pyobject(py)
}

/// Requests this large are parsed without the GIL (other threads run meanwhile); smaller ones keep it, since
/// taking it back can cost a whole switch interval when another thread holds it.
const DETACH_BYTES: usize = 64 << 10;

fn parse<M: Message + Default + Send>(py: Python<'_>, data: &[u8]) -> Option<M> {
    if data.len() >= DETACH_BYTES {
        py.detach(|| M::decode(data).ok())
    } else {
        M::decode(data).ok()
    }
}

static EMPTY_LINK_HISTORY: LinkHistory = LinkHistory { samples: Vec::new() };
static EMPTY_NODE_HISTORY: NodeHistory = NodeHistory { samples: Vec::new() };
static EMPTY_WINDOW: ConsensusWindow = ConsensusWindow { samples: Vec::new() };

/// PredictBandwidthRequest -> (selector, histories) or None.
#[pyfunction]
fn decode_predict_bandwidth<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(r) = parse::<PredictBandwidthRequest>(py, data) else {
        return Ok(None);
    };
    let h = r.history.as_ref().unwrap_or(&EMPTY_LINK_HISTORY);
    Ok(Some(
        (selector(&r.model), network(&[h]).into_py(py)?).into_pyobject(py)?,
    ))
}

#[pyfunction]
fn decode_predict_bandwidth_batch<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(r) = parse::<PredictBandwidthBatchRequest>(py, data) else {
        return Ok(None);
    };
    let hs: Vec<&LinkHistory> = r.histories.iter().collect();
    Ok(Some((selector(&r.model), network(&hs).into_py(py)?).into_pyobject(py)?))
}

/// SelectCompressionRequest -> (selector, queries) or None.
#[pyfunction]
fn decode_select_compression<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(r) = parse::<SelectCompressionRequest>(py, data) else {
        return Ok(None);
    };
    Ok(Some(
        (
            selector(&r.model),
            queries(py, &[(r.link.as_ref(), r.payload.as_ref())])?,
        )
            .into_pyobject(py)?,
    ))
}

#[pyfunction]
fn decode_select_compression_batch<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(r) = parse::<SelectCompressionBatchRequest>(py, data) else {
        return Ok(None);
    };
    let items: Vec<_> = r
        .queries
        .iter()
        .map(|q| (q.link.as_ref(), q.payload.as_ref()))
        .collect();
    Ok(Some((selector(&r.model), queries(py, &items)?).into_pyobject(py)?))
}

/// DetectAnomalyRequest -> (selector, has_metrics, metrics, histories) or None.
#[pyfunction]
fn decode_detect_anomaly<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(r) = parse::<DetectAnomalyRequest>(py, data) else {
        return Ok(None);
    };
    let empty = NodeMetrics::default();
    let metrics = node_metrics(&[r.metrics.as_ref().unwrap_or(&empty)]);
    let history = node_histories(&[r.history.as_ref().unwrap_or(&EMPTY_NODE_HISTORY)]);
    if metrics.has_custom || history.has_custom {
        return Ok(None);
    }
    Ok(Some(
        (
            selector(&r.model),
            r.metrics.is_some(),
            metrics.into_py(py)?,
            history.into_py(py)?,
        )
            .into_pyobject(py)?,
    ))
}

#[pyfunction]
fn decode_detect_anomaly_batch<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(r) = parse::<DetectAnomalyBatchRequest>(py, data) else {
        return Ok(None);
    };
    let ms: Vec<&NodeMetrics> = r.metrics.iter().collect();
    let hs: Vec<&NodeHistory> = r.histories.iter().collect();
    let (metrics, histories) = (node_metrics(&ms), node_histories(&hs));
    if metrics.has_custom || histories.has_custom {
        return Ok(None);
    }
    Ok(Some(
        (selector(&r.model), true, metrics.into_py(py)?, histories.into_py(py)?).into_pyobject(py)?,
    ))
}

/// DetectHighLatencyRequest -> (selector, windows) or None.
#[pyfunction]
fn decode_detect_high_latency<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(r) = parse::<DetectHighLatencyRequest>(py, data) else {
        return Ok(None);
    };
    let windows = consensus(&[r.window.as_ref().unwrap_or(&EMPTY_WINDOW)]);
    if windows.has_custom {
        return Ok(None);
    }
    Ok(Some((selector(&r.model), windows.into_py(py)?).into_pyobject(py)?))
}

#[pyfunction]
fn decode_detect_high_latency_batch<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Some(r) = parse::<DetectHighLatencyBatchRequest>(py, data) else {
        return Ok(None);
    };
    let ws: Vec<&ConsensusWindow> = r.windows.iter().collect();
    let windows = consensus(&ws);
    if windows.has_custom {
        return Ok(None);
    }
    Ok(Some((selector(&r.model), windows.into_py(py)?).into_pyobject(py)?))
}

#[pymodule]
fn dwcp_inference_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_predict_bandwidth, m)?)?;
    m.add_function(wrap_pyfunction!(decode_predict_bandwidth_batch, m)?)?;
    m.add_function(wrap_pyfunction!(decode_select_compression, m)?)?;
    m.add_function(wrap_pyfunction!(decode_select_compression_batch, m)?)?;
    m.add_function(wrap_pyfunction!(decode_detect_anomaly, m)?)?;
    m.add_function(wrap_pyfunction!(decode_detect_anomaly_batch, m)?)?;
    m.add_function(wrap_pyfunction!(decode_detect_high_latency, m)?)?;
    m.add_function(wrap_pyfunction!(decode_detect_high_latency_batch, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_bandwidth, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_compression, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_anomaly, m)?)?;
    m.add_function(wrap_pyfunction!(encode::encode_latency, m)?)?;
    m.add_function(wrap_pyfunction!(ids::sign_ids, m)?)?;
    m.add_function(wrap_pyfunction!(ids::mac, m)?)?;
    m.add_class::<front::Front>()?;
    m.add(
        "__doc__",
        "Inference request bytes to raw columns and answers to response bytes (prost); see \
         dwcp_inference.services.decode and .encode",
    )?;
    Ok(())
}
