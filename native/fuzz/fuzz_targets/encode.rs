//! The response encoders (src/wire.rs) on arbitrary columns: ids, names and versions of any length, NaN and
//! infinite values, huge or empty batches, out-of-range indexes, columns of the wrong length. They answer bytes
//! that protobuf parses back to the same items, or an error; never a panic.
//!
//!     cd native/fuzz && cargo +nightly fuzz run encode -- -max_total_time=60
#![no_main]
use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use prost::Message;

#[path = "../../src/wire.rs"]
mod wire;

#[allow(clippy::all, dead_code)]
mod proto {
    include!("../../src/gen/dwcp.inference.v1.rs");
}

/// `n` values, or (sometimes) a column of another length, to reach the length checks.
fn column<'a, T: arbitrary::Arbitrary<'a>>(u: &mut Unstructured<'a>, n: usize) -> Result<Vec<T>> {
    let len = if u.ratio(1, 16)? { u.int_in_range(0..=n + 2)? } else { n };
    (0..len).map(|_| u.arbitrary()).collect()
}

/// Indexes into a table of `len`, sometimes out of range.
fn indexes(u: &mut Unstructured, n: usize, len: usize) -> Result<Vec<i64>> {
    let bad = u.ratio(1, 16)?;
    let count = if u.ratio(1, 16)? { u.int_in_range(0..=n + 2)? } else { n };
    (0..count)
        .map(|_| {
            if bad {
                u.arbitrary()
            } else {
                Ok(u.int_in_range(0..=len.max(1) - 1)? as i64)
            }
        })
        .collect()
}

fn run(u: &mut Unstructured) -> Result<()> {
    let which: u8 = u.arbitrary()?;
    let (name, version): (String, String) = (u.arbitrary()?, u.arbitrary()?);
    let model = wire::Model {
        name: &name,
        version: &version,
    };
    let n = u.int_in_range(0..=300)?;
    let ids: Vec<String> = (0..n).map(|_| u.arbitrary()).collect::<Result<_>>()?;
    let parsed_ids: Vec<String>;
    match which % 4 {
        0 => {
            let v: Vec<Vec<f64>> = (0..5).map(|_| column(u, n)).collect::<Result<_>>()?;
            let (secs, nanos) = (column::<i64>(u, n)?, column::<i32>(u, n)?);
            let now = (u.arbitrary()?, u.arbitrary()?);
            let interval: Option<Vec<Vec<f64>>> = if u.arbitrary()? {
                Some((0..2).map(|_| column(u, n)).collect::<Result<_>>()?)
            } else {
                None
            };
            let bounds = interval.as_ref().map(|c| [&c[0][..], &c[1][..]]);
            let Ok(bytes) = wire::bandwidth(&model, &ids, [&v[0], &v[1], &v[2], &v[3], &v[4]], &secs, &nanos, now, bounds)
            else {
                return Ok(());
            };
            let r = proto::PredictBandwidthBatchResponse::decode(&bytes[..]).expect("bandwidth bytes parse");
            for (p, i) in r.predictions.iter().zip(0..) {
                assert_eq!(p.predicted_bandwidth_mbps.to_bits(), v[0][i].to_bits());
                assert_eq!(p.predicted_bandwidth_p10_mbps.map(f64::to_bits), bounds.map(|c| c[0][i].to_bits()));
                assert_eq!(p.predicted_bandwidth_p90_mbps.map(f64::to_bits), bounds.map(|c| c[1][i].to_bits()));
                assert_eq!(p.valid_until.as_ref().unwrap().seconds, secs[i]);
            }
            parsed_ids = r.predictions.into_iter().map(|p| p.prediction_id).collect();
            assert_eq!(r.model.unwrap().version, version);
        }
        1 => {
            let k = u.int_in_range(0..=12)?;
            let (codecs, levels) = (column::<i32>(u, k)?, column::<i32>(u, k)?);
            let ranked = indexes(u, n * k, k)?;
            let probability = column::<f64>(u, n * k)?;
            let Ok(bytes) = wire::compression(&model, &ids, &codecs, &levels, &ranked, &probability) else {
                return Ok(());
            };
            let r = proto::SelectCompressionBatchResponse::decode(&bytes[..]).expect("compression bytes parse");
            for d in &r.decisions {
                assert_eq!(d.scores.len(), k);
                let key = |c: &proto::CompressionChoice| (c.codec, c.level, c.score.to_bits());
                assert_eq!(d.choice.as_ref().map(key), d.scores.first().map(key));
            }
            parsed_ids = r.decisions.into_iter().map(|d| d.prediction_id).collect();
        }
        2 => {
            let names: Vec<String> = u.arbitrary()?;
            let top = u.int_in_range(0..=12)?;
            let (flagged, score) = (column::<u8>(u, n)?, column::<f64>(u, n)?);
            let severity = column::<i32>(u, n)?;
            let feature = indexes(u, n * top, names.len())?;
            let c: Vec<Vec<f64>> = (0..3).map(|_| column(u, n * top)).collect::<Result<_>>()?;
            let verdicts = wire::Verdicts {
                flagged: &flagged,
                score: &score,
                threshold: u.arbitrary()?,
            };
            let Ok(bytes) = wire::anomaly(
                &model,
                &ids,
                &verdicts,
                &severity,
                &names,
                top,
                &feature,
                [&c[0], &c[1], &c[2]],
            ) else {
                return Ok(());
            };
            let r = proto::DetectAnomalyBatchResponse::decode(&bytes[..]).expect("anomaly bytes parse");
            for (v, i) in r.verdicts.iter().zip(0..) {
                assert_eq!(v.contributions.len(), top);
                assert_eq!(v.is_anomaly, flagged[i] != 0);
            }
            parsed_ids = r.verdicts.into_iter().map(|v| v.prediction_id).collect();
        }
        _ => {
            let names: Vec<String> = u.arbitrary()?;
            let width = u.int_in_range(0..=40)?;
            let (flagged, score) = (column::<u8>(u, n)?, column::<f64>(u, n)?);
            let feature = indexes(u, n * width, names.len())?;
            let errors = column::<f64>(u, n * width)?;
            let verdicts = wire::Verdicts {
                flagged: &flagged,
                score: &score,
                threshold: u.arbitrary()?,
            };
            let Ok(bytes) = wire::latency(&model, &ids, &verdicts, &names, width, &feature, &errors) else {
                return Ok(());
            };
            let r = proto::DetectHighLatencyBatchResponse::decode(&bytes[..]).expect("latency bytes parse");
            for v in &r.verdicts {
                assert_eq!(v.feature_errors.len(), width);
            }
            parsed_ids = r.verdicts.into_iter().map(|v| v.prediction_id).collect();
        }
    }
    assert_eq!(parsed_ids, ids);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
