//! `crema diff A.caffemodel B.caffemodel [--tolerance T]`: blob by blob, are two models the
//! same? Exit 0 when identical (or within relative tolerance), 1 when they differ, 2 on error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::proto::blob::{read_blob, shape_string};
use crate::proto::read_net_binary;
use crate::util::glog::fmt_g;

pub struct DiffResult {
    pub report: String,
    /// True when every blob exists on both sides and is within tolerance.
    pub same: bool,
}

/// Blobs by (layer, index): shape and values.
type Blobs = BTreeMap<(String, usize), (Vec<usize>, Vec<f32>)>;

fn blobs(path: &Path) -> Result<Blobs> {
    let net = read_net_binary(path)?;
    let mut out = BTreeMap::new();
    for l in &net.layer {
        for (i, b) in l.blobs.iter().enumerate() {
            let v = read_blob(b).map_err(|e| {
                anyhow::anyhow!("{}: layer {} blob {i}: {e}", path.display(), l.name())
            })?;
            out.insert((l.name().to_string(), i), (v.shape, v.data));
        }
    }
    Ok(out)
}

pub fn diff(a: &Path, b: &Path, tolerance: f64) -> Result<DiffResult> {
    let (ba, bb) = (blobs(a)?, blobs(b)?);
    let mut out = String::new();
    let mut same = true;
    let keys: std::collections::BTreeSet<_> = ba.keys().chain(bb.keys()).cloned().collect();
    for key in keys {
        let (layer, i) = &key;
        match (ba.get(&key), bb.get(&key)) {
            (Some((sa, da)), Some((sb, db))) => {
                if sa != sb {
                    same = false;
                    let _ = writeln!(
                        out,
                        "{layer} blob {i}: shapes differ: {} vs {}",
                        shape_string(sa),
                        shape_string(sb)
                    );
                    continue;
                }
                let bits_equal = da.iter().zip(db).all(|(x, y)| x.to_bits() == y.to_bits());
                if bits_equal {
                    let _ = writeln!(out, "{layer} blob {i}: identical ({})", shape_string(sa));
                    continue;
                }
                let mut max_abs = 0f64;
                let mut max_ref = 0f64;
                for (x, y) in da.iter().zip(db) {
                    let d = (*x as f64 - *y as f64).abs();
                    max_abs = if d.is_nan() {
                        f64::INFINITY
                    } else {
                        max_abs.max(d)
                    };
                    max_ref = max_ref.max((*x as f64).abs()).max((*y as f64).abs());
                }
                let rel = if max_ref > 0.0 {
                    max_abs / max_ref
                } else {
                    max_abs
                };
                let within = rel <= tolerance && tolerance > 0.0;
                if !within {
                    same = false;
                }
                let _ = writeln!(
                    out,
                    "{layer} blob {i}: {} ({}): max abs difference {}, max relative {}",
                    if within {
                        "within tolerance"
                    } else {
                        "DIFFERS"
                    },
                    shape_string(sa),
                    fmt_g(max_abs),
                    fmt_g(rel)
                );
            }
            (Some(_), None) => {
                same = false;
                let _ = writeln!(out, "{layer} blob {i}: only in {}", a.display());
            }
            (None, Some(_)) => {
                same = false;
                let _ = writeln!(out, "{layer} blob {i}: only in {}", b.display());
            }
            (None, None) => unreachable!(),
        }
    }
    let _ = writeln!(
        out,
        "{}",
        if same {
            "Models are the same."
        } else {
            "Models differ."
        }
    );
    Ok(DiffResult { report: out, same })
}
