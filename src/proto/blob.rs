//! BlobProto <-> (shape, values), with Caffe's legacy-shape rules and the checks that keep a
//! corrupt file from turning into a panic or a huge allocation.

use anyhow::{bail, Result};

use super::caffe::{BlobProto, BlobShape};

/// The largest element count crema accepts for one blob (2^40 floats = 4 TiB): a shape beyond
/// it is corrupt, not a model.
pub const MAX_BLOB_COUNT: u64 = 1 << 40;

/// Whether the proto carries the legacy num/channels/height/width fields.
pub fn has_legacy_dims(bp: &BlobProto) -> bool {
    bp.num.is_some() || bp.channels.is_some() || bp.height.is_some() || bp.width.is_some()
}

/// Shape as Caffe reads it (`Blob::FromProto`): legacy 4-D if any legacy field is present,
/// else `shape.dim`. Negative dimensions are an error.
pub fn proto_shape(bp: &BlobProto) -> Result<Vec<usize>> {
    let dims: Vec<i64> = if has_legacy_dims(bp) {
        vec![
            bp.num.unwrap_or(0) as i64,
            bp.channels.unwrap_or(0) as i64,
            bp.height.unwrap_or(0) as i64,
            bp.width.unwrap_or(0) as i64,
        ]
    } else {
        bp.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default()
    };
    let mut out = Vec::with_capacity(dims.len());
    for (i, &d) in dims.iter().enumerate() {
        if d < 0 {
            bail!("negative dimension {d} at axis {i} in blob shape {dims:?}");
        }
        out.push(d as usize);
    }
    checked_count(&out)?;
    Ok(out)
}

/// Product of dims, refusing overflow and absurd sizes before anything is allocated.
pub fn checked_count(shape: &[usize]) -> Result<usize> {
    let mut n: u64 = 1;
    for &d in shape {
        n = match n.checked_mul(d as u64) {
            Some(v) if v <= MAX_BLOB_COUNT => v,
            _ => bail!(
                "blob shape {} has too many elements (over 2^40)",
                fmt_dims(shape)
            ),
        };
    }
    Ok(n as usize)
}

/// Caffe's shape text: `4 3 3 3 (108)`.
pub fn shape_string(shape: &[usize]) -> String {
    // Checked: this also prints shapes that failed `checked_count`.
    match shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64)) {
        Some(count) => format!("{} ({count})", fmt_dims(shape)),
        None => format!("{} (overflow)", fmt_dims(shape)),
    }
}

fn fmt_dims(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Values held by a BlobProto, converted to f32, with the count checked against the shape.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobValues {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub diff: Option<Vec<f32>>,
}

/// Reads a BlobProto the way `Blob::FromProto` does: `double_data` wins if non-empty, and the
/// value count must equal the shape's count exactly.
pub fn read_blob(bp: &BlobProto) -> Result<BlobValues> {
    let shape = proto_shape(bp)?;
    let count = checked_count(&shape)?;
    let data = if !bp.double_data.is_empty() {
        check_len("double_data", bp.double_data.len(), count, &shape)?;
        bp.double_data.iter().map(|&v| v as f32).collect()
    } else {
        check_len("data", bp.data.len(), count, &shape)?;
        bp.data.clone()
    };
    let diff = if !bp.double_diff.is_empty() {
        check_len("double_diff", bp.double_diff.len(), count, &shape)?;
        Some(bp.double_diff.iter().map(|&v| v as f32).collect())
    } else if !bp.diff.is_empty() {
        check_len("diff", bp.diff.len(), count, &shape)?;
        Some(bp.diff.clone())
    } else {
        None
    };
    Ok(BlobValues { shape, data, diff })
}

fn check_len(field: &str, got: usize, want: usize, shape: &[usize]) -> Result<()> {
    if got != want {
        bail!(
            "blob {field} holds {got} values but its shape {} needs {want}",
            shape_string(shape)
        );
    }
    Ok(())
}

/// Writes a blob as current Caffe does: `shape` + `data` (+ `diff`), never legacy dims.
pub fn write_blob(shape: &[usize], data: &[f32], diff: Option<&[f32]>) -> BlobProto {
    BlobProto {
        shape: Some(BlobShape {
            dim: shape.iter().map(|&d| d as i64).collect(),
        }),
        data: data.to_vec(),
        diff: diff.map(|d| d.to_vec()).unwrap_or_default(),
        ..Default::default()
    }
}

/// `Blob::ShapeEquals`: with legacy dims the target must have at most 4 axes and, padded with
/// leading 1s to 4-D, equal (num, channels, height, width); otherwise exact equality.
pub fn shape_equals(bp: &BlobProto, target: &[usize]) -> bool {
    if has_legacy_dims(bp) {
        if target.len() > 4 {
            return false;
        }
        let mut padded = vec![1usize; 4 - target.len()];
        padded.extend_from_slice(target);
        let legacy = [bp.num, bp.channels, bp.height, bp.width].map(|v| v.unwrap_or(0) as i64);
        padded
            .iter()
            .zip(legacy.iter())
            .all(|(&t, &l)| t as i64 == l)
    } else {
        let dims = bp.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
        dims.len() == target.len() && dims.iter().zip(target).all(|(&d, &t)| d == t as i64)
    }
}

/// Legacy 4-D view of a shape, for error messages that show both forms.
pub fn legacy_shape_string(shape: &[usize]) -> String {
    if shape.len() > 4 {
        return shape_string(shape);
    }
    let mut padded = vec![1usize; 4 - shape.len()];
    padded.extend_from_slice(shape);
    shape_string(&padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(n: i32, c: i32, h: i32, w: i32) -> BlobProto {
        BlobProto {
            num: Some(n),
            channels: Some(c),
            height: Some(h),
            width: Some(w),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_dims_match_lower_rank_targets() {
        assert!(shape_equals(&legacy(1, 1, 10, 64), &[10, 64]));
        assert!(shape_equals(&legacy(1, 1, 1, 4), &[4]));
        assert!(!shape_equals(&legacy(1, 1, 4096, 9216), &[4096, 256, 6, 6]));
        assert!(!shape_equals(&legacy(1, 1, 1, 4), &[1, 2, 3, 4, 5]));
    }

    #[test]
    fn count_mismatch_and_overflow_are_errors() {
        let mut bp = write_blob(&[2, 3], &[0.0; 6], None);
        assert!(read_blob(&bp).is_ok());
        bp.data.pop();
        assert!(read_blob(&bp)
            .unwrap_err()
            .to_string()
            .contains("holds 5 values"));
        let huge = BlobProto {
            shape: Some(BlobShape {
                dim: vec![1 << 31, 1 << 31, 1 << 31],
            }),
            ..Default::default()
        };
        assert!(read_blob(&huge).is_err());
        let neg = BlobProto {
            shape: Some(BlobShape { dim: vec![-1] }),
            ..Default::default()
        };
        assert!(read_blob(&neg).is_err());
    }

    #[test]
    fn double_data_is_preferred() {
        let bp = BlobProto {
            shape: Some(BlobShape { dim: vec![2] }),
            data: vec![1.0, 2.0],
            double_data: vec![3.0, 4.0],
            ..Default::default()
        };
        assert_eq!(read_blob(&bp).unwrap().data, vec![3.0, 4.0]);
    }
}
