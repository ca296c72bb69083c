//! Prediction ids signed per batch (services/prediction_ids.py documents the format): each item's body from the
//! batch's common parts and the item's nonce and value, its MAC (keyed BLAKE2b, digest size 16, as Python's
//! `hashlib.blake2b(key=..., digest_size=16)`), and the whole as unpadded base64url.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};

type Keyed = Blake2bMac<U16>;
use blake2::Blake2bMac;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub const MAC_BYTES: usize = 16;

/// The ids of a batch: item k's body is `head` (format, model, made at: 6 bytes), its 8-byte nonce, `tail` (the
/// version, length first) and its `width` bytes of `values`; its id is base64url(body | MAC(body)).
pub fn sign(
    key: &[u8],
    head: &[u8],
    tail: &[u8],
    nonces: &[u8],
    values: &[u8],
    width: usize,
) -> Result<Vec<String>, String> {
    if !nonces.len().is_multiple_of(8) || Some(values.len()) != (nonces.len() / 8).checked_mul(width) {
        return Err(format!(
            "{} bytes of nonces and {} of values: expected 8 and {width} per prediction",
            nonces.len(),
            values.len()
        ));
    }
    let keyed = <Keyed as KeyInit>::new_from_slice(key)
        .map_err(|_| format!("outcome key: {} bytes, BLAKE2b takes at most 64", key.len()))?;
    let mut raw = Vec::with_capacity(head.len() + 8 + tail.len() + width + MAC_BYTES);
    Ok(nonces
        .chunks_exact(8)
        .enumerate()
        .map(|(k, nonce)| {
            raw.clear();
            raw.extend_from_slice(head);
            raw.extend_from_slice(nonce);
            raw.extend_from_slice(tail);
            raw.extend_from_slice(&values[k * width..(k + 1) * width]);
            let mut mac = keyed.clone();
            mac.update(&raw);
            raw.extend_from_slice(&mac.finalize().into_bytes());
            URL_SAFE_NO_PAD.encode(&raw)
        })
        .collect())
}

/// sign_ids(key, head, tail, nonces, values, width) -> [id]: see `sign`.
#[pyfunction]
pub fn sign_ids(
    key: &[u8],
    head: &[u8],
    tail: &[u8],
    nonces: &[u8],
    values: &[u8],
    width: usize,
) -> PyResult<Vec<String>> {
    sign(key, head, tail, nonces, values, width).map_err(PyValueError::new_err)
}

/// mac(key, data) -> 16 bytes: one keyed BLAKE2b digest (for the test of equality with hashlib).
#[pyfunction]
pub fn mac<'py>(py: Python<'py>, key: &[u8], data: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let mut m = <Keyed as KeyInit>::new_from_slice(key)
        .map_err(|_| PyValueError::new_err(format!("key: {} bytes, BLAKE2b takes at most 64", key.len())))?;
    m.update(data);
    Ok(PyBytes::new(py, &m.finalize().into_bytes()))
}
