//! Responses as protobuf bytes from a batch's columns, in plain Rust (no Python: encode.rs wraps it for Python,
//! fuzz/ drives it directly).
//!
//! Written with prost's wire primitives rather than derived prost messages, to be byte-identical to the protobuf
//! runtime's SerializeToString (upb): fields in number order, and a proto3 double is left out only when its bits
//! are all zero (upb writes -0.0; a derived prost message compares with 0.0 and would drop it). Every column's
//! length and every index is checked: bad input is an `Err`, never a panic or bytes that do not parse.
use prost::encoding::{encode_key, encode_varint, WireType};

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn double(&mut self, tag: u32, v: f64) {
        if v.to_bits() != 0 {
            encode_key(tag, WireType::SixtyFourBit, &mut self.0);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }
    /// A proto3 `optional double` that is set: written whatever its value (0.0 included).
    fn double_set(&mut self, tag: u32, v: f64) {
        encode_key(tag, WireType::SixtyFourBit, &mut self.0);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn varint(&mut self, tag: u32, v: u64) {
        if v != 0 {
            encode_key(tag, WireType::Varint, &mut self.0);
            encode_varint(v, &mut self.0);
        }
    }
    /// int32, int64 and enums: negative values sign-extended to ten bytes, as protobuf does.
    fn int(&mut self, tag: u32, v: i64) {
        self.varint(tag, v as u64)
    }
    fn bytes(&mut self, tag: u32, v: &[u8]) {
        encode_key(tag, WireType::LengthDelimited, &mut self.0);
        encode_varint(v.len() as u64, &mut self.0);
        self.0.extend_from_slice(v);
    }
    fn string(&mut self, tag: u32, v: &str) {
        if !v.is_empty() {
            self.bytes(tag, v.as_bytes())
        }
    }
    /// A message field that is set (written even when empty).
    fn message(&mut self, tag: u32, build: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        build(&mut inner);
        self.bytes(tag, &inner.0);
    }
}

/// The model that answered: every response's field 2.
pub struct Model<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

fn model_ref(w: &mut Writer, m: &Model) {
    w.message(2, |r| {
        r.string(1, m.name);
        r.string(2, m.version);
    });
}

fn timestamp(w: &mut Writer, tag: u32, seconds: i64, nanos: i32) {
    w.message(tag, |t| {
        t.int(1, seconds);
        t.int(2, nanos as i64);
    });
}

fn check_len(name: &str, len: usize, expected: Option<usize>) -> Result<(), String> {
    match expected {
        Some(n) if n == len => Ok(()),
        Some(n) => Err(format!("{name}: {len} values, expected {n}")),
        None => Err(format!("{name}: too many values")),
    }
}

fn check_indexes(name: &str, index: &[i64], len: usize) -> Result<(), String> {
    match index.iter().find(|&&k| k < 0 || k as u64 >= len as u64) {
        Some(k) => Err(format!("{name}: index {k} out of range 0..{len}")),
        None => Ok(()),
    }
}

/// PredictBandwidth(Batch)Response. `values`: bandwidth, latency, loss, jitter, confidence, one per id;
/// `valid_until` and `now`: (seconds, nanos); `interval`: p10 and p90, one per id, from a version with quantile
/// outputs (fields 9 and 10, proto3 optional: written even at 0), None from one without (left out).
pub fn bandwidth(
    model: &Model,
    ids: &[String],
    values: [&[f64]; 5],
    valid_seconds: &[i64],
    valid_nanos: &[i32],
    now: (i64, i32),
    interval: Option<[&[f64]; 2]>,
) -> Result<Vec<u8>, String> {
    let n = ids.len();
    for (v, name) in values
        .iter()
        .zip(["bandwidth_mbps", "latency_ms", "packet_loss", "jitter_ms", "confidence"])
    {
        check_len(name, v.len(), Some(n))?;
    }
    check_len("valid_seconds", valid_seconds.len(), Some(n))?;
    check_len("valid_nanos", valid_nanos.len(), Some(n))?;
    if let Some([p10, p90]) = interval {
        check_len("p10", p10.len(), Some(n))?;
        check_len("p90", p90.len(), Some(n))?;
    }
    let mut w = Writer(Vec::with_capacity(n * 128 + 32));
    for (i, id) in ids.iter().enumerate() {
        w.message(1, |p| {
            for (k, col) in values.iter().enumerate() {
                p.double(k as u32 + 1, col[i]);
            }
            timestamp(p, 6, valid_seconds[i], valid_nanos[i]);
            timestamp(p, 7, now.0, now.1);
            p.string(8, id);
            if let Some([p10, p90]) = interval {
                p.double_set(9, p10[i]);
                p.double_set(10, p90[i]);
            }
        });
    }
    model_ref(&mut w, model);
    Ok(w.0)
}

/// SelectCompression(Batch)Response. `ranked` [B, K] indexes the choices (`codecs` enum values and `levels`, K of
/// each), best first; `probability` [B, K] in the same order.
pub fn compression(
    model: &Model,
    ids: &[String],
    codecs: &[i32],
    levels: &[i32],
    ranked: &[i64],
    probability: &[f64],
) -> Result<Vec<u8>, String> {
    let (n, k) = (ids.len(), codecs.len());
    if k == 0 || levels.len() != k {
        return Err(format!(
            "choices: {k} codecs and {} levels, expected as many of each, at least one",
            levels.len()
        ));
    }
    check_len("ranked", ranked.len(), n.checked_mul(k))?;
    check_len("probability", probability.len(), n.checked_mul(k))?;
    check_indexes("ranked", ranked, k)?;
    let choice = |m: &mut Writer, c: i64, p: f64| {
        m.int(1, codecs[c as usize] as i64);
        m.int(2, levels[c as usize] as i64);
        m.double(3, p);
    };
    let mut w = Writer(Vec::with_capacity(n * (24 + 16 * k) + 32));
    for (i, id) in ids.iter().enumerate() {
        let (order, probs) = (&ranked[i * k..(i + 1) * k], &probability[i * k..(i + 1) * k]);
        w.message(1, |d| {
            d.message(1, |m| choice(m, order[0], probs[0]));
            for (&c, &p) in order.iter().zip(probs) {
                d.message(2, |m| choice(m, c, p));
            }
            d.string(3, id);
        });
    }
    model_ref(&mut w, model);
    Ok(w.0)
}

/// Each item's verdict of a detector: flag, score (error), threshold.
pub struct Verdicts<'a> {
    pub flagged: &'a [u8],
    pub score: &'a [f64],
    pub threshold: f64,
}

impl Verdicts<'_> {
    fn check(&self, n: usize) -> Result<(), String> {
        check_len("flags", self.flagged.len(), Some(n))?;
        check_len("scores", self.score.len(), Some(n))
    }
}

/// DetectAnomaly(Batch)Response. `severity`: enum values; `top` contributions per item: `feature` [B, top]
/// indexes `names`; `contributions`: value, expected, deviation, each [B, top].
#[allow(clippy::too_many_arguments)]
pub fn anomaly(
    model: &Model,
    ids: &[String],
    verdicts: &Verdicts,
    severity: &[i32],
    names: &[String],
    top: usize,
    feature: &[i64],
    contributions: [&[f64]; 3],
) -> Result<Vec<u8>, String> {
    let n = ids.len();
    verdicts.check(n)?;
    check_len("severity", severity.len(), Some(n))?;
    let size = n.checked_mul(top);
    check_len("feature", feature.len(), size)?;
    for (c, name) in contributions.iter().zip(["value", "expected", "deviation"]) {
        check_len(name, c.len(), size)?;
    }
    check_indexes("feature", feature, names.len())?;
    let [value, expected, deviation] = contributions;
    let mut w = Writer(Vec::with_capacity(n * (48 + 48 * top) + 32));
    for (i, id) in ids.iter().enumerate() {
        w.message(1, |v| {
            v.varint(1, (verdicts.flagged[i] != 0) as u64);
            v.double(2, verdicts.score[i]);
            v.double(3, verdicts.threshold);
            v.int(4, severity[i] as i64);
            for j in i * top..(i + 1) * top {
                v.message(5, |c| {
                    c.string(1, &names[feature[j] as usize]);
                    c.double(2, value[j]);
                    c.double(3, expected[j]);
                    c.double(4, deviation[j]);
                });
            }
            v.string(6, id);
        });
    }
    model_ref(&mut w, model);
    Ok(w.0)
}

/// DetectHighLatency(Batch)Response. `feature` [B, width] indexes `names`, largest error first, with
/// `feature_error` [B, width] in the same order.
pub fn latency(
    model: &Model,
    ids: &[String],
    verdicts: &Verdicts,
    names: &[String],
    width: usize,
    feature: &[i64],
    feature_error: &[f64],
) -> Result<Vec<u8>, String> {
    let n = ids.len();
    verdicts.check(n)?;
    check_len("feature", feature.len(), n.checked_mul(width))?;
    check_len("feature_error", feature_error.len(), n.checked_mul(width))?;
    check_indexes("feature", feature, names.len())?;
    let mut w = Writer(Vec::with_capacity(n * (40 + 32 * width) + 32));
    for (i, id) in ids.iter().enumerate() {
        w.message(1, |v| {
            v.varint(1, (verdicts.flagged[i] != 0) as u64);
            v.double(2, verdicts.score[i]);
            v.double(3, verdicts.threshold);
            for j in i * width..(i + 1) * width {
                v.message(4, |e| {
                    e.string(1, &names[feature[j] as usize]);
                    e.double(2, feature_error[j]);
                });
            }
            v.string(5, id);
        });
    }
    model_ref(&mut w, model);
    Ok(w.0)
}
