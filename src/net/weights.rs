//! Weights in and out of a net: loading by layer name from a caffemodel (`--weights`), saving
//! as Caffe's `Net::ToProto` does, and aliasing a test net to the train net's parameters.

use anyhow::{bail, Result};

use super::Net;
use crate::proto::blob::{
    legacy_shape_string, proto_shape, read_blob, shape_equals, shape_string, write_blob,
};
use crate::proto::caffe::NetParameter;

/// What happened to each layer during a weight load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// Blobs copied from the file.
    Copied { blobs: usize },
    /// Not in the file: keeps its filler initialisation.
    KeptInit,
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Target layers with parameters, in net order, with their outcome.
    pub layers: Vec<(String, LoadOutcome)>,
    /// Source layers the net does not have.
    pub ignored: Vec<String>,
}

impl LoadReport {
    /// Lines for the log: one per layer with parameters, plus ignored source layers.
    pub fn lines(&self, source: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (name, o) in &self.layers {
            out.push(match o {
                LoadOutcome::Copied { blobs } => {
                    format!("  {name}: copied {blobs} blob(s) from {source}")
                }
                LoadOutcome::KeptInit => {
                    format!("  {name}: not in {source}, keeps its filler initialisation")
                }
            });
        }
        for name in &self.ignored {
            out.push(format!("  {name}: in {source} but not in the net, ignored"));
        }
        out
    }
}

impl Net {
    /// Caffe's `CopyTrainedLayersFrom`: for each source layer, the first target layer with the
    /// same name gets its blobs (count and shapes must match; the legacy 4-D rule applies).
    pub fn copy_trained_layers_from(&self, source: &NetParameter) -> Result<LoadReport> {
        let mut report = LoadReport::default();
        let mut copied = vec![None; self.layers.len()];
        for sl in &source.layer {
            let name = sl.name();
            let Some(li) = self.layer_index(name) else {
                if self.verbose {
                    crate::info!("Ignoring source layer {name}");
                }
                report.ignored.push(name.to_string());
                continue;
            };
            let target = self.layers[li].layer.blobs();
            if target.len() != sl.blobs.len() {
                bail!(
                    "Incompatible number of blobs for layer {name}: the source has {}, the net's layer has {}",
                    sl.blobs.len(),
                    target.len()
                );
            }
            for (j, (bp, tb)) in sl.blobs.iter().zip(target).enumerate() {
                let tshape = tb.shape();
                if !shape_equals(bp, &tshape) {
                    let src = proto_shape(bp)
                        .map(|s| shape_string(&s))
                        .unwrap_or_else(|e| e.to_string());
                    bail!(
                        "Cannot copy param {j} weights from layer '{name}'; shape mismatch.  Source param shape is {src}; target param shape is {} (legacy 4-D: {}). To learn this layer's parameters from scratch rather than copying from a saved net, rename the layer.",
                        shape_string(&tshape),
                        legacy_shape_string(&tshape)
                    );
                }
                let v =
                    read_blob(bp).map_err(|e| anyhow::anyhow!("layer '{name}', param {j}: {e}"))?;
                tb.set_data(&v.data)?;
            }
            if !sl.blobs.is_empty() {
                copied[li] = Some(sl.blobs.len());
            }
        }
        for (li, e) in self.layers.iter().enumerate() {
            if e.layer.blobs().is_empty() {
                continue;
            }
            let outcome = match copied[li] {
                Some(n) => LoadOutcome::Copied { blobs: n },
                None => LoadOutcome::KeptInit,
            };
            report.layers.push((e.param.name().to_string(), outcome));
        }
        Ok(report)
    }

    /// The net as a caffemodel (`Net::ToProto`): every layer's own LayerParameter with its
    /// blobs as `shape` + `data` (+ `diff` when asked).
    pub fn to_proto(&self, write_diff: bool) -> NetParameter {
        let mut net = NetParameter {
            name: Some(self.name.clone()),
            ..Default::default()
        };
        for e in &self.layers {
            let mut lp = e.layer.layer_param().clone();
            lp.blobs.clear();
            for b in e.layer.blobs() {
                let data = b.data_vec();
                let diff = if write_diff { Some(b.diff_vec()) } else { None };
                lp.blobs
                    .push(write_blob(&b.shape(), &data, diff.as_deref()));
            }
            net.layer.push(lp);
        }
        net
    }

    /// Caffe's `ShareTrainedLayersWith`: every layer of this net with a namesake in `other`
    /// aliases that layer's parameter data (counts and shapes must match).
    pub fn share_trained_layers_with(&self, other: &Net) -> Result<()> {
        for e in &other.layers {
            let name = e.param.name();
            let Some(li) = self.layer_index(name) else {
                continue;
            };
            let mine = self.layers[li].layer.blobs();
            let theirs = e.layer.blobs();
            if mine.len() != theirs.len() {
                bail!(
                    "Incompatible number of blobs for layer {name} between the train and test nets ({} vs {})",
                    theirs.len(),
                    mine.len()
                );
            }
            for (j, (m, t)) in mine.iter().zip(theirs).enumerate() {
                if m.shape() != t.shape() {
                    bail!(
                        "Cannot share param {j} of layer '{name}' between nets; shape mismatch: {} vs {}",
                        t.shape_string(),
                        m.shape_string()
                    );
                }
                m.share_data(t);
            }
        }
        Ok(())
    }
}
