//! CPU fusion of consecutive layers that ResNet-style nets repeat, so that each runs as one
//! pass over its blob instead of one pass per layer (on a CPU these layers are bound by memory
//! traffic, not arithmetic):
//! - `normalize`: BatchNorm -> Scale -> ReLU, in place;
//! - `join`: the residual join, Eltwise SUM -> in-place ReLU -> Split.
//!
//! Every fused pass computes each value with the operations, in the order, of the layers' own
//! CPU kernels, so the results are the same bits as running the layers one by one
//! (tests/cpu_fusion.rs). The net runs a chain fused when a whole-net (or whole-range) pass
//! covers all of it, on the CPU backend only; `forward_layer` / `backward_layer` on one layer
//! still run that layer alone.

mod join;
mod normalize;

use anyhow::{anyhow, Result};

use super::{LayerEntry, Net};
use crate::layers::relu::ReluLayer;
pub use join::Join;
pub use normalize::Norm;

/// What a chain fuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normalize(Norm),
    Join(Join),
}

/// One chain of consecutive layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub kind: Kind,
    /// The last forward of this chain was fused (a fused Scale did not keep its input).
    pub(super) forward_fused: bool,
}

impl Chain {
    /// The chain's layers, in order.
    pub fn layers(&self) -> Vec<usize> {
        match self.kind {
            Kind::Normalize(n) => n.layers(),
            Kind::Join(j) => j.layers(),
        }
    }

    /// The first layer (asked for every layer of every pass: no allocation).
    pub fn first(&self) -> usize {
        match self.kind {
            Kind::Normalize(n) => n.batch_norm,
            Kind::Join(j) => j.eltwise,
        }
    }

    /// The last layer.
    pub fn last(&self) -> usize {
        match self.kind {
            Kind::Normalize(n) => n.relu.unwrap_or(n.scale),
            Kind::Join(j) => j.split.unwrap_or(j.relu),
        }
    }
}

/// The chains of a built net. Besides its pattern, a chain needs: no layer of it carrying a
/// loss weight, and all or none of its layers needing backward.
pub fn find_chains(net: &Net) -> Vec<Chain> {
    let l = &net.layers;
    let mut chains = Vec::new();
    let mut i = 0;
    while i < l.len() {
        let kind = normalize::find_at(l, i)
            .map(Kind::Normalize)
            .or_else(|| join::find_at(l, i).map(Kind::Join));
        let Some(kind) = kind else {
            i += 1;
            continue;
        };
        let chain = Chain {
            kind,
            forward_fused: false,
        };
        let members: Vec<&LayerEntry> = chain.layers().iter().map(|&li| &l[li]).collect();
        let no_loss = members
            .iter()
            .all(|e| e.loss_weights.iter().all(|&w| w == 0.0));
        let backward_agrees = members
            .iter()
            .all(|e| e.need_backward == members[0].need_backward);
        if no_loss && backward_agrees {
            i = chain.last() + 1;
            chains.push(chain);
        } else {
            i += 1;
        }
    }
    chains
}

/// Reshapes chain `ci`'s layers and runs its forward fused when the shapes allow; returns
/// false, having run no layer's arithmetic, when they do not.
pub(super) fn forward(net: &mut Net, ci: usize) -> Result<bool> {
    let fused = match net.fused[ci].kind {
        Kind::Normalize(n) => normalize::forward(net, n)?,
        Kind::Join(j) => join::forward(net, j)?,
    };
    net.fused[ci].forward_fused = fused;
    Ok(fused)
}

/// Backward of chain `ci`, with the results its layers' backward passes would give.
pub(super) fn backward(net: &mut Net, ci: usize) -> Result<()> {
    match net.fused[ci].kind {
        Kind::Normalize(n) => normalize::backward(net, n),
        Kind::Join(j) => join::backward(net, j),
    }
}

/// The slope of layer `li`, a ReLU.
fn relu_slope(net: &mut Net, li: usize) -> Result<f32> {
    net.layers[li]
        .layer
        .as_any_mut()
        .and_then(|a| a.downcast_mut::<ReluLayer>())
        .map(|r| r.slope())
        .ok_or_else(|| anyhow!("fused chain: layer {li} is not a ReLU"))
}

/// Before layer `li`'s own (unfused) backward: what a fused forward did not leave behind.
pub(super) fn prepare_unfused_backward(net: &mut Net, li: usize) -> Result<()> {
    normalize::prepare_unfused_backward(net, li)
}
