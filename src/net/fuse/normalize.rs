//! BatchNorm -> Scale -> ReLU: consecutive layers where the Scale (and the ReLU, if present)
//! run in place on the BatchNorm's top. Nothing outside the chain sees the intermediate values
//! (in place, they are overwritten before the next layer), so the chain runs as one forward
//! pass and one backward pass over the blob (`backend::cpu::bn_scale_relu`).
//!
//! A Scale whose forward was fused has not copied its input; the net sets it from the
//! BatchNorm's normalised output before that Scale's own backward runs
//! (`prepare_unfused_backward`).

use anyhow::{anyhow, Result};

use super::Kind;
use crate::backend::cpu::bn_scale_relu::{self as kernel, Affine, ParamGrads};
use crate::blob::{read, same, write, BlobRef};
use crate::layers::batch_norm::BatchNormLayer;
use crate::layers::scale::ScaleLayer;
use crate::layers::Layer;
use crate::net::{LayerEntry, Net};

/// One chain: layer indices, consecutive.
/// The layers of one chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Norm {
    pub batch_norm: usize,
    pub scale: usize,
    pub relu: Option<usize>,
}

impl Norm {
    pub fn layers(&self) -> Vec<usize> {
        let mut v = vec![self.batch_norm, self.scale];
        v.extend(self.relu);
        v
    }
}

/// The chain starting at layer `i`, if there is one: BatchNorm (one bottom, one top T), then
/// a Scale with one bottom (a learned scale) in place on T, then optionally a ReLU in place on
/// T with a non-negative slope.
pub(super) fn find_at(l: &[LayerEntry], i: usize) -> Option<Norm> {
    let (bn, sc) = (l.get(i)?, l.get(i + 1)?);
    let in_place_on = |e: &LayerEntry, t: usize| {
        e.bottoms == [t] && e.tops == [t] && e.bottom_need_backward == [true]
    };
    let ok = bn.layer.type_name() == "BatchNorm"
        && bn.bottoms.len() == 1
        && bn.tops.len() == 1
        && sc.layer.type_name() == "Scale"
        && in_place_on(sc, bn.tops[0]);
    if !ok {
        return None;
    }
    let t = bn.tops[0];
    let relu = l.get(i + 2).filter(|r| {
        r.layer.type_name() == "ReLU"
            && in_place_on(r, t)
            && r.param
                .relu_param
                .as_ref()
                .map_or(0.0, |p| p.negative_slope())
                >= 0.0
    });
    Some(Norm {
        batch_norm: i,
        scale: i + 1,
        relu: relu.map(|_| i + 2),
    })
}

/// The three layers of a chain, borrowed together.
struct Parts<'a> {
    bn: &'a mut BatchNormLayer,
    scale: &'a mut ScaleLayer,
    relu_slope: Option<f32>,
}

fn parts<'a>(net: &'a mut Net, c: &Norm) -> Result<Parts<'a>> {
    let relu_slope = c.relu.map(|r| super::relu_slope(net, r)).transpose()?;
    let (head, tail) = net.layers.split_at_mut(c.scale);
    let bn = head[c.batch_norm]
        .layer
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<BatchNormLayer>());
    let scale = tail[0]
        .layer
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<ScaleLayer>());
    match (bn, scale) {
        (Some(bn), Some(scale)) => Ok(Parts {
            bn,
            scale,
            relu_slope,
        }),
        _ => Err(anyhow!(
            "fused chain at layer {}: unexpected layer types",
            c.batch_norm
        )),
    }
}

/// The chain's bottom blob (the BatchNorm's) and its blob T.
fn blobs(net: &Net, c: &Norm) -> (BlobRef, BlobRef) {
    let e = &net.layers[c.batch_norm];
    (
        net.blobs[e.bottoms[0]].clone(),
        net.blobs[e.tops[0]].clone(),
    )
}

/// Reshapes the chain's layers and runs it fused when the shapes allow it (the Scale
/// broadcasts one value per BatchNorm channel); returns false, having run nothing, when not.
pub(super) fn forward(net: &mut Net, c: Norm) -> Result<bool> {
    let (bottom, t) = blobs(net, &c);
    for li in c.layers() {
        net.reshape_layer(li)?;
    }
    let p = parts(net, &c)?;
    let ((outer, dim, inner), bias_index) = p.scale.broadcast();
    let (d, ..) = p.bn.fusion_state();
    if (outer, dim, inner) != (d.num, d.channels, d.spatial) {
        return Ok(false);
    }
    p.bn.take_statistics(&bottom);
    let (d, mean, std, x_norm, _) = p.bn.fusion_state();
    let blobs = &p.scale.base().blobs;
    let (sb, bb) = (blobs[0].data_buf(), bias_index.map(|i| blobs[i].data_buf()));
    let (scale, bias) = (read(&sb), bb.as_ref().map(read));
    let affine = Affine {
        scale: &scale,
        bias: bias.as_deref().map(|b| &b[..]),
    };
    let (xb, tb) = (bottom.data_buf(), t.data_buf());
    if !same(&xb, &tb) {
        write(&tb).copy_from_slice(&read(&xb));
    }
    x_norm.resize(d.num * d.channels * d.spatial, 0.0);
    kernel::forward(d, mean, std, affine, p.relu_slope, &mut write(&tb), x_norm);
    Ok(true)
}

/// Backward of a chain whose forward was fused or not (it needs only the BatchNorm's state,
/// the Scale's parameters and T).
pub(super) fn backward(net: &mut Net, c: Norm) -> Result<()> {
    let (bottom, t) = blobs(net, &c);
    let p = parts(net, &c)?;
    let ((_, dim, _), bias_index) = p.scale.broadcast();
    let accumulate = p.scale.accumulates_scale_grad();
    let base = p.scale.base();
    let want_scale = base.param_needs_grad(0);
    let want_bias = bias_index.filter(|&i| base.param_needs_grad(i));
    let (sb, sdb) = (base.blobs[0].data_buf(), base.blobs[0].diff_buf());
    let bdb = want_bias.map(|i| base.blobs[i].diff_buf());
    let (scale, mut sdiff) = (read(&sb), write(&sdb));
    let mut bdiff = bdb.as_ref().map(write);
    let (d, _, std, x_norm, batch) = p.bn.fusion_state();
    debug_assert_eq!(dim, d.channels);
    let grads = ParamGrads {
        scale: want_scale.then_some((&mut sdiff[..], accumulate)),
        bias: bdiff.as_deref_mut().map(|b| (&mut b[..], true)),
    };
    let bias_data = bias_index.map(|i| base.blobs[i].data_buf());
    let bias = bias_data.as_ref().map(read);
    let affine = Affine {
        scale: &scale,
        bias: bias.as_deref().map(|b| &b[..]),
    };
    let (tdiff, bdiff_buf) = (t.diff_buf(), bottom.diff_buf());
    let mut dy = write(&tdiff);
    if same(&tdiff, &bdiff_buf) {
        kernel::backward(
            d,
            std,
            affine,
            p.relu_slope,
            batch,
            x_norm,
            &mut dy,
            None,
            grads,
        );
    } else {
        let mut dx = write(&bdiff_buf);
        #[rustfmt::skip]
        kernel::backward(d, std, affine, p.relu_slope, batch, x_norm, &mut dy, Some(&mut dx), grads);
    }
    Ok(())
}

/// Before layer `li`'s own backward: if it is the Scale of a chain whose forward was fused,
/// give it the input it did not keep (the BatchNorm's normalised output).
pub(super) fn prepare_unfused_backward(net: &mut Net, li: usize) -> Result<()> {
    let found = net
        .fused
        .iter()
        .position(|c| c.forward_fused && matches!(c.kind, Kind::Normalize(n) if n.scale == li));
    let Some(ci) = found else {
        return Ok(());
    };
    let Kind::Normalize(c) = net.fused[ci].kind else {
        unreachable!("found as a Normalize chain")
    };
    let p = parts(net, &c)?;
    let (_, _, _, x_norm, _) = p.bn.fusion_state();
    p.scale.set_input(x_norm);
    net.fused[ci].forward_fused = false;
    Ok(())
}
