//! Responses as bytes, from the columns of a batch's answers (services/encode.py): one function per response
//! type, the single and the batch form alike (a single response's singular field 1 and a batch's repeated field
//! 1 are the same bytes on the wire for one item). Columns come as native-endian bytes (numpy's `tobytes`); the
//! encoding itself is wire.rs. Bad input is a ValueError, never a panic.
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::wire::{self, Model, Verdicts};

/// A column of native-endian values from its bytes.
fn column<T, const W: usize>(name: &str, data: &[u8], read: fn([u8; W]) -> T) -> PyResult<Vec<T>> {
    if !data.len().is_multiple_of(W) {
        return Err(PyValueError::new_err(format!(
            "{name}: {} bytes, not values of {W} bytes",
            data.len()
        )));
    }
    Ok(data.chunks_exact(W).map(|c| read(c.try_into().unwrap())).collect())
}
fn f64s(name: &str, data: &[u8]) -> PyResult<Vec<f64>> {
    column(name, data, f64::from_ne_bytes)
}
fn i64s(name: &str, data: &[u8]) -> PyResult<Vec<i64>> {
    column(name, data, i64::from_ne_bytes)
}
fn i32s(name: &str, data: &[u8]) -> PyResult<Vec<i32>> {
    column(name, data, i32::from_ne_bytes)
}

fn answer<'py>(py: Python<'py>, encoded: Result<Vec<u8>, String>) -> PyResult<Bound<'py, PyBytes>> {
    encoded.map(|b| PyBytes::new(py, &b)).map_err(PyValueError::new_err)
}

/// encode_bandwidth(model, version, ids, [bandwidth, latency, loss, jitter, confidence] f64 bytes,
/// valid_until seconds i64 bytes, nanos i32 bytes, now_seconds, now_nanos, [p10, p90] f64 bytes or None: a
/// version without quantile outputs) -> the response's bytes.
#[pyfunction]
#[pyo3(signature = (model, version, ids, values, valid_seconds, valid_nanos, now_seconds, now_nanos, interval=None))]
#[allow(clippy::too_many_arguments)]
pub fn encode_bandwidth<'py>(
    py: Python<'py>,
    model: &str,
    version: &str,
    ids: Vec<String>,
    values: [Bound<'py, PyBytes>; 5],
    valid_seconds: &[u8],
    valid_nanos: &[u8],
    now_seconds: i64,
    now_nanos: i32,
    interval: Option<[Bound<'py, PyBytes>; 2]>,
) -> PyResult<Bound<'py, PyBytes>> {
    let bounds = interval
        .map(|[p10, p90]| -> PyResult<_> { Ok((f64s("p10", p10.as_bytes())?, f64s("p90", p90.as_bytes())?)) })
        .transpose()?;
    let cols = values
        .iter()
        .map(|v| f64s("values", v.as_bytes()))
        .collect::<PyResult<Vec<_>>>()?;
    let (secs, nanos) = (i64s("valid_seconds", valid_seconds)?, i32s("valid_nanos", valid_nanos)?);
    let values = [&cols[0][..], &cols[1][..], &cols[2][..], &cols[3][..], &cols[4][..]];
    answer(
        py,
        wire::bandwidth(
            &Model { name: model, version },
            &ids,
            values,
            &secs,
            &nanos,
            (now_seconds, now_nanos),
            bounds.as_ref().map(|(p10, p90)| [&p10[..], &p90[..]]),
        ),
    )
}

/// encode_compression(model, version, ids, codecs [K] enum values, levels [K], ranked [B, K] i64 bytes,
/// probability [B, K] f64 bytes) -> the response's bytes.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn encode_compression<'py>(
    py: Python<'py>,
    model: &str,
    version: &str,
    ids: Vec<String>,
    codecs: Vec<i32>,
    levels: Vec<i32>,
    ranked: &[u8],
    probability: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let (ranked, probability) = (i64s("ranked", ranked)?, f64s("probability", probability)?);
    answer(
        py,
        wire::compression(
            &Model { name: model, version },
            &ids,
            &codecs,
            &levels,
            &ranked,
            &probability,
        ),
    )
}

/// encode_anomaly(model, version, ids, is_anomaly [B] u8 bytes, score [B] f64 bytes, threshold, severity [B] i32
/// bytes, names, top, feature [B, top] i64 bytes, [value, expected, deviation] [B, top] f64 bytes).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn encode_anomaly<'py>(
    py: Python<'py>,
    model: &str,
    version: &str,
    ids: Vec<String>,
    is_anomaly: &[u8],
    score: &[u8],
    threshold: f64,
    severity: &[u8],
    names: Vec<String>,
    top: usize,
    feature: &[u8],
    contributions: [Bound<'py, PyBytes>; 3],
) -> PyResult<Bound<'py, PyBytes>> {
    let score = f64s("score", score)?;
    let (severity, feature) = (i32s("severity", severity)?, i64s("feature", feature)?);
    let c = contributions
        .iter()
        .map(|v| f64s("contributions", v.as_bytes()))
        .collect::<PyResult<Vec<_>>>()?;
    let verdicts = Verdicts {
        flagged: is_anomaly,
        score: &score,
        threshold,
    };
    answer(
        py,
        wire::anomaly(
            &Model { name: model, version },
            &ids,
            &verdicts,
            &severity,
            &names,
            top,
            &feature,
            [&c[0], &c[1], &c[2]],
        ),
    )
}

/// encode_latency(model, version, ids, is_high_latency [B] u8 bytes, error [B] f64 bytes, threshold, names,
/// width, feature [B, width] i64 bytes, feature_error [B, width] f64 bytes).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn encode_latency<'py>(
    py: Python<'py>,
    model: &str,
    version: &str,
    ids: Vec<String>,
    is_high_latency: &[u8],
    error: &[u8],
    threshold: f64,
    names: Vec<String>,
    width: usize,
    feature: &[u8],
    feature_error: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let error = f64s("error", error)?;
    let (feature, feature_error) = (i64s("feature", feature)?, f64s("feature_error", feature_error)?);
    let verdicts = Verdicts {
        flagged: is_high_latency,
        score: &error,
        threshold,
    };
    answer(
        py,
        wire::latency(
            &Model { name: model, version },
            &ids,
            &verdicts,
            &names,
            width,
            &feature,
            &feature_error,
        ),
    )
}
