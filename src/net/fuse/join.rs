//! The residual join: Eltwise SUM of two different blobs into S (not in place), a ReLU in
//! place on S, and optionally the Split of S that the net inserted for its consumers
//! (`backend::cpu::residual_join`). Forward writes S once (the Split shares S's data, as
//! always); backward reads the Split's top diffs and S, and writes the two input gradients.
//!
//! S's own diff (the Split's sum, then the ReLU's gradient in place) is an intermediate that
//! only these three layers read; the fused backward does not write it.

use anyhow::{anyhow, Result};

use crate::backend::cpu::residual_join as kernel;
use crate::blob::{read, write, BlobRef};
use crate::layers::eltwise::EltwiseLayer;
use crate::net::{LayerEntry, Net};
use crate::proto::caffe::eltwise_parameter::EltwiseOp;

/// The layers of one join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Join {
    pub eltwise: usize,
    pub relu: usize,
    pub split: Option<usize>,
}

impl Join {
    pub fn layers(&self) -> Vec<usize> {
        let mut v = vec![self.eltwise, self.relu];
        v.extend(self.split);
        v
    }
}

/// The join starting at layer `i`, if there is one.
pub(super) fn find_at(l: &[LayerEntry], i: usize) -> Option<Join> {
    let (sum, relu) = (l.get(i)?, l.get(i + 1)?);
    let s = *sum.tops.first()?;
    let is_sum = sum.layer.type_name() == "Eltwise"
        && sum
            .param
            .eltwise_param
            .as_ref()
            .is_none_or(|p| p.operation() == EltwiseOp::Sum);
    let ok = is_sum
        && sum.bottoms.len() == 2
        && sum.bottoms[0] != sum.bottoms[1]
        && sum.tops.len() == 1
        && !sum.bottoms.contains(&s)
        && relu.layer.type_name() == "ReLU"
        && relu.bottoms == [s]
        && relu.tops == [s]
        && relu.bottom_need_backward == [true];
    if !ok {
        return None;
    }
    let split = l
        .get(i + 2)
        .filter(|e| e.layer.type_name() == "Split" && e.bottoms == [s] && !e.tops.contains(&s));
    Some(Join {
        eltwise: i,
        relu: i + 1,
        split: split.map(|_| i + 2),
    })
}

/// The SUM's two coefficients (after reshape).
fn coefficients(net: &mut Net, j: &Join) -> Result<[f32; 2]> {
    let e = net.layers[j.eltwise]
        .layer
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<EltwiseLayer>());
    match e.and_then(|e| e.sum_coefficients()) {
        Some(&[a, b]) => Ok([a, b]),
        Some(c) => Err(anyhow!(
            "fused join: {} coefficients for 2 bottoms",
            c.len()
        )),
        None => Err(anyhow!(
            "fused join: layer {} is not an Eltwise SUM",
            j.eltwise
        )),
    }
}

/// The SUM's bottoms and S.
fn blobs(net: &Net, j: &Join) -> ([BlobRef; 2], BlobRef) {
    let e = &net.layers[j.eltwise];
    (
        [
            net.blobs[e.bottoms[0]].clone(),
            net.blobs[e.bottoms[1]].clone(),
        ],
        net.blobs[e.tops[0]].clone(),
    )
}

/// Reshapes the join's layers (the Split's reshape shares S's data with its tops) and writes
/// S = relu(c0 * a + c1 * b).
pub(super) fn forward(net: &mut Net, j: Join) -> Result<bool> {
    for li in j.layers() {
        net.reshape_layer(li)?;
    }
    let coeff = coefficients(net, &j)?;
    let slope = super::relu_slope(net, j.relu)?;
    let ([a, b], s) = blobs(net, &j);
    let (ab, bb, sb) = (a.data_buf(), b.data_buf(), s.data_buf());
    kernel::forward(&read(&ab), &read(&bb), coeff, slope, &mut write(&sb));
    Ok(true)
}

/// The SUM's bottom diffs (those it propagates to) from the Split's top diffs (or S's diff
/// without a Split) and S.
pub(super) fn backward(net: &mut Net, j: Join) -> Result<()> {
    let coeff = coefficients(net, &j)?;
    let slope = super::relu_slope(net, j.relu)?;
    let ([a, b], s) = blobs(net, &j);
    let grad_sources: Vec<BlobRef> = match j.split {
        Some(sp) => net.layers[sp]
            .tops
            .iter()
            .map(|&t| net.blobs[t].clone())
            .collect(),
        None => vec![s.clone()],
    };
    let diff_bufs: Vec<_> = grad_sources.iter().map(|t| t.diff_buf()).collect();
    let diffs: Vec<_> = diff_bufs.iter().map(read).collect();
    let ds: Vec<&[f32]> = diffs.iter().map(|d| &d[..]).collect();
    let sdata = s.data_buf();
    let y = read(&sdata);
    let want = net.layers[j.eltwise].bottom_need_backward.clone();
    let (da, db) = (a.diff_buf(), b.diff_buf());
    let mut ga = want[0].then(|| write(&da));
    let mut gb = want[1].then(|| write(&db));
    kernel::backward(
        &ds,
        &y,
        slope,
        coeff,
        ga.as_deref_mut().map(|v| &mut v[..]),
        gb.as_deref_mut().map(|v| &mut v[..]),
    );
    Ok(())
}
