//! `Net`: a graph of layers built from a NetParameter and a NetState with Caffe's rules
//! (`net.cpp`): layer filtering, automatic splits, in-place tops, loss weights, need-backward
//! analysis, parameter sharing, outputs in Caffe's (lexical) order.

pub mod filter;
pub mod fuse;
pub mod splits;
pub mod weights;

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};

use crate::backend::cuda::gpu::Gpu;
use crate::blob::{Blob, BlobRef};
use crate::layers::{backward_on, check_blob_counts, create_layer, forward_on, Ctx, Layer};
use crate::proto::blob::shape_string;
use crate::proto::caffe::{param_spec::DimCheckMode, NetParameter, NetState, ParamSpec, Phase};
use crate::rng::CaffeRng;
use crate::util::glog::fmt_g;

/// One layer in a built net, with its wiring and backward flags.
pub struct LayerEntry {
    pub layer: Box<dyn Layer>,
    /// The net's copy of the LayerParameter (after filtering and split insertion).
    pub param: crate::proto::caffe::LayerParameter,
    pub bottoms: Vec<usize>,
    pub tops: Vec<usize>,
    pub need_backward: bool,
    pub bottom_need_backward: Vec<bool>,
    /// Loss weight per top (0 = not a loss).
    pub loss_weights: Vec<f32>,
    /// Index into `Net::params` of each of the layer's parameter blobs.
    pub param_ids: Vec<usize>,
}

/// A parameter blob as the net sees it.
#[derive(Clone)]
pub struct NetParam {
    pub layer: usize,
    pub index: usize,
    pub blob: BlobRef,
    /// The ParamSpec name, or the index as text.
    pub display_name: String,
    /// The net param this one shares (aliases), if any.
    pub owner: Option<usize>,
    /// Index into `Net::learnable` (shared params point to their owner's entry).
    pub learnable_id: usize,
}

/// A parameter the solver updates: one per owner.
#[derive(Clone)]
pub struct Learnable {
    pub param_id: usize,
    pub blob: BlobRef,
    pub lr_mult: f32,
    pub decay_mult: f32,
    has_lr: bool,
    has_decay: bool,
}

pub struct Net {
    pub name: String,
    pub phase: Phase,
    pub state: NetState,
    pub layers: Vec<LayerEntry>,
    pub blobs: Vec<BlobRef>,
    pub blob_names: Vec<String>,
    pub blob_need_backward: Vec<bool>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    pub params: Vec<NetParam>,
    pub learnable: Vec<Learnable>,
    /// Log net construction (Caffe logs only on the root solver; tests turn it off).
    pub verbose: bool,
    /// The GPU the layers run on (`None`: the CPU backend).
    pub gpu: Option<Rc<Gpu>>,
    /// Chains of layers that whole-net passes run fused on the CPU (`fuse`).
    pub(crate) fused: Vec<fuse::Chain>,
    /// Run those chains fused (on by default; the same results either way).
    pub cpu_fusion: bool,
}

/// Options for building a net.
#[derive(Clone, Copy)]
pub struct BuildOptions {
    pub verbose: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { verbose: true }
    }
}

fn log(verbose: bool, msg: String) {
    if verbose {
        crate::info!("{msg}");
    }
}

impl Net {
    /// Builds a net in `state` from `param` (already upgraded), filling parameters from `rng`.
    pub fn new(
        param: &NetParameter,
        state: &NetState,
        rng: &mut CaffeRng,
        opts: BuildOptions,
    ) -> Result<Net> {
        let filtered = filter::filter_net(param, state)?;
        let net_param = splits::insert_splits(&filtered);
        let verbose = opts.verbose;
        let phase = state.phase();
        log(
            verbose,
            format!(
                "Initializing net '{}' in phase {}",
                net_param.name(),
                phase_name(phase)
            ),
        );
        let mut net = Net {
            name: net_param.name().to_string(),
            phase,
            state: state.clone(),
            layers: Vec::new(),
            blobs: Vec::new(),
            blob_names: Vec::new(),
            blob_need_backward: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: Vec::new(),
            learnable: Vec::new(),
            verbose,
            gpu: None,
            fused: Vec::new(),
            cpu_fusion: true,
        };
        let mut available: BTreeSet<String> = BTreeSet::new();
        let mut name_to_blob: HashMap<String, usize> = HashMap::new();
        let mut param_names: HashMap<String, usize> = HashMap::new();
        let mut memory: u64 = 0;

        for (layer_id, lp) in net_param.layer.iter().enumerate() {
            let mut lp = lp.clone();
            if lp.phase.is_none() {
                lp.phase = Some(phase as i32);
            }
            let lname = lp.name().to_string();
            if !lp.propagate_down.is_empty() && lp.propagate_down.len() != lp.bottom.len() {
                bail!(
                    "layer '{lname}': propagate_down must be given 0 or {} times (once per bottom), not {}",
                    lp.bottom.len(),
                    lp.propagate_down.len()
                );
            }
            let mut layer = create_layer(&lp)?;
            log(verbose, format!("Creating Layer {lname}"));
            // Stored blobs in the net parameter (a caffemodel used as a net) become the params.
            if !lp.blobs.is_empty() {
                let mut given = Vec::new();
                for (i, bp) in lp.blobs.iter().enumerate() {
                    let v = crate::proto::blob::read_blob(bp)
                        .with_context(|| format!("layer '{lname}', stored blob {i}"))?;
                    given.push(Blob::from_data(&v.shape, v.data)?);
                }
                layer.base_mut().blobs = given;
            }

            // Bottoms.
            let mut bottoms = Vec::new();
            let mut bottom_need = Vec::new();
            let mut need_backward = false;
            for (b, bname) in lp.bottom.iter().enumerate() {
                if !available.contains(bname) {
                    bail!("Unknown bottom blob '{bname}' (layer '{lname}', bottom index {b})");
                }
                let id = name_to_blob[bname];
                log(verbose, format!("{lname} <- {bname}"));
                available.remove(bname);
                let mut nb = net.blob_need_backward[id];
                need_backward |= nb;
                if !lp.propagate_down.is_empty() {
                    nb = lp.propagate_down[b];
                }
                bottoms.push(id);
                bottom_need.push(nb);
            }

            // Tops (in place when a top names the bottom at the same index).
            let mut tops = Vec::new();
            let mut top_names = lp.top.clone();
            if layer.auto_top_blobs() {
                // Loss layers make anonymous tops so their losses are counted.
                let needed = match layer.top_arity() {
                    crate::layers::Arity::Exact(n) | crate::layers::Arity::Min(n) => n,
                    crate::layers::Arity::Range(a, _) => a,
                    crate::layers::Arity::Any => 0,
                };
                while top_names.len() < needed {
                    top_names.push(format!("(automatic)#{}", top_names.len()));
                }
            }
            for (t, tname) in top_names.iter().enumerate() {
                let in_place = lp.bottom.get(t) == Some(tname);
                if in_place {
                    log(verbose, format!("{lname} -> {tname} (in-place)"));
                    let id = bottoms[t];
                    tops.push(id);
                    available.insert(tname.clone());
                    continue;
                }
                if name_to_blob.contains_key(tname) {
                    bail!("Top blob '{tname}' produced by multiple sources (layer '{lname}').");
                }
                log(verbose, format!("{lname} -> {tname}"));
                let id = net.blobs.len();
                net.blobs.push(Blob::empty());
                net.blob_names.push(tname.clone());
                net.blob_need_backward.push(false);
                name_to_blob.insert(tname.clone(), id);
                available.insert(tname.clone());
                if lp.r#type() == "Input" {
                    net.inputs.push(id);
                }
                tops.push(id);
            }

            let bottom_blobs: Vec<BlobRef> =
                bottoms.iter().map(|&i| net.blobs[i].clone()).collect();
            let top_blobs: Vec<BlobRef> = tops.iter().map(|&i| net.blobs[i].clone()).collect();
            log(verbose, format!("Setting up {lname}"));
            check_blob_counts(layer.as_ref(), bottoms.len(), tops.len())?;
            layer
                .setup(rng, &bottom_blobs, &top_blobs)
                .with_context(|| format!("setting up layer '{lname}' ({})", lp.r#type()))?;
            layer
                .reshape(&bottom_blobs, &top_blobs)
                .with_context(|| format!("reshaping layer '{lname}' ({})", lp.r#type()))?;

            // Loss weights come from the layer's own copy (loss layers default to 1).
            let own = layer.layer_param().clone();
            let mut loss_weights = vec![0f32; tops.len()];
            if !own.loss_weight.is_empty() {
                if own.loss_weight.len() != tops.len() {
                    bail!(
                        "layer '{lname}': loss_weight must be unspecified or given once per top blob ({} tops, {} weights)",
                        tops.len(),
                        own.loss_weight.len()
                    );
                }
                for (t, &w) in own.loss_weight.iter().enumerate() {
                    if w != 0.0 {
                        loss_weights[t] = w;
                        top_blobs[t].fill_diff(w);
                    }
                }
            }
            for (t, b) in top_blobs.iter().enumerate() {
                log(verbose, format!("Top shape: {}", b.shape_string()));
                if loss_weights[t] != 0.0 {
                    log(
                        verbose,
                        format!("    with loss weight {}", fmt_g(loss_weights[t] as f64)),
                    );
                }
                memory += b.count() as u64;
            }

            // Parameter-driven backward uses the net's copy of the ParamSpecs (Caffe's quirk:
            // BatchNorm's auto-added lr_mult 0 specs are not seen here).
            let nblobs = layer.blobs().len();
            if lp.param.len() > nblobs {
                bail!(
                    "Too many params specified for layer '{lname}': {} param {{}} blocks, the layer has {nblobs} parameter blob(s)",
                    lp.param.len()
                );
            }
            let default_spec = ParamSpec::default();
            let mut ppd = Vec::with_capacity(nblobs);
            for i in 0..nblobs {
                let spec = lp.param.get(i).unwrap_or(&default_spec);
                let need = spec.lr_mult() != 0.0;
                need_backward |= need;
                ppd.push(need);
            }
            layer.base_mut().param_propagate_down = ppd;

            let mut entry = LayerEntry {
                layer,
                param: lp.clone(),
                bottoms,
                tops,
                need_backward,
                bottom_need_backward: bottom_need,
                loss_weights,
                param_ids: Vec::new(),
            };
            for i in 0..nblobs {
                let pid = net.append_param(&mut entry, layer_id, i, &mut param_names)?;
                entry.param_ids.push(pid);
            }
            if need_backward {
                for &t in &entry.tops {
                    net.blob_need_backward[t] = true;
                }
            }
            net.layers.push(entry);
        }

        net.analyse_backward(net_param.force_backward());
        for name in &available {
            log(verbose, format!("This network produces output {name}"));
            net.outputs.push(name_to_blob[name]);
        }
        // Shared params alias their owner's data and diff.
        for p in &net.params {
            if let Some(o) = p.owner {
                let owner = &net.params[o].blob;
                p.blob.share_data(owner);
                p.blob.share_diff(owner);
            }
        }
        net.fused = fuse::find_chains(&net);
        for c in &net.fused {
            let names: Vec<&str> = c
                .layers()
                .iter()
                .map(|&l| net.layers[l].param.name())
                .collect();
            log(
                verbose,
                format!("CPU: {} run as one pass", names.join(" + ")),
            );
        }
        log(verbose, format!("Memory required for data: {}", memory * 4));
        log(verbose, "Network initialization done.".to_string());
        Ok(net)
    }

    fn append_param(
        &mut self,
        entry: &mut LayerEntry,
        layer_id: usize,
        index: usize,
        names: &mut HashMap<String, usize>,
    ) -> Result<usize> {
        let own = entry.layer.layer_param();
        let spec = own.param.get(index).cloned().unwrap_or_default();
        let pname = spec.name().to_string();
        let blob = entry.layer.blobs()[index].clone();
        let pid = self.params.len();
        let display_name = if pname.is_empty() {
            index.to_string()
        } else {
            pname.clone()
        };
        let lname = entry.param.name().to_string();
        if pname.is_empty() || !names.contains_key(&pname) {
            if !pname.is_empty() {
                names.insert(pname, pid);
            }
            let lid = self.learnable.len();
            self.learnable.push(Learnable {
                param_id: pid,
                blob: blob.clone(),
                lr_mult: spec.lr_mult(),
                decay_mult: spec.decay_mult(),
                has_lr: spec.lr_mult.is_some(),
                has_decay: spec.decay_mult.is_some(),
            });
            self.params.push(NetParam {
                layer: layer_id,
                index,
                blob,
                display_name,
                owner: None,
                learnable_id: lid,
            });
        } else {
            let owner_id = names[&pname];
            let owner = self.params[owner_id].clone();
            let owner_layer = self.layers[owner.layer].param.name().to_string();
            log(
                self.verbose,
                format!(
                    "Sharing parameters '{pname}' owned by layer '{owner_layer}', param index {}",
                    owner.index
                ),
            );
            let permissive = spec.share_mode() == DimCheckMode::Permissive;
            if permissive {
                if blob.count() != owner.blob.count() {
                    bail!(
                        "Cannot share param '{pname}' owned by layer '{owner_layer}' with layer '{lname}'; count mismatch.  Owner layer param shape is {}; sharing layer shape is {}",
                        owner.blob.shape_string(),
                        blob.shape_string()
                    );
                }
            } else if blob.shape() != owner.blob.shape() {
                bail!(
                    "Cannot share param '{pname}' owned by layer '{owner_layer}' with layer '{lname}'; shape mismatch.  Owner layer param shape is {}; sharing layer expects shape {}",
                    owner.blob.shape_string(),
                    blob.shape_string()
                );
            }
            let lid = owner.learnable_id;
            let l = &mut self.learnable[lid];
            if spec.lr_mult.is_some() {
                if l.has_lr && l.lr_mult != spec.lr_mult() {
                    bail!("Shared param '{pname}' has mismatched lr_mult (layer '{lname}').");
                }
                l.has_lr = true;
                l.lr_mult = spec.lr_mult();
            }
            if spec.decay_mult.is_some() {
                if l.has_decay && l.decay_mult != spec.decay_mult() {
                    bail!("Shared param '{pname}' has mismatched decay_mult (layer '{lname}').");
                }
                l.has_decay = true;
                l.decay_mult = spec.decay_mult();
            }
            self.params.push(NetParam {
                layer: layer_id,
                index,
                blob,
                display_name,
                owner: Some(owner_id),
                learnable_id: lid,
            });
        }
        Ok(pid)
    }

    /// The reverse pass of Caffe's backward analysis, then `force_backward`.
    fn analyse_backward(&mut self, force_backward: bool) {
        let mut under_loss: BTreeSet<String> = BTreeSet::new();
        let mut skip_backp: BTreeSet<String> = BTreeSet::new();
        for li in (0..self.layers.len()).rev() {
            let e = &mut self.layers[li];
            let mut contributes = false;
            let mut skip = true;
            for (t, &tid) in e.tops.iter().enumerate() {
                let name = &self.blob_names[tid];
                if e.loss_weights[t] != 0.0 || under_loss.contains(name) {
                    contributes = true;
                }
                if !skip_backp.contains(name) {
                    skip = false;
                }
                if contributes && !skip {
                    break;
                }
            }
            if e.need_backward && skip {
                e.need_backward = false;
                e.bottom_need_backward.iter_mut().for_each(|b| *b = false);
            }
            if !contributes {
                e.need_backward = false;
            }
            let lname = e.param.name().to_string();
            if e.need_backward {
                log(self.verbose, format!("{lname} needs backward computation."));
            } else {
                log(
                    self.verbose,
                    format!("{lname} does not need backward computation."),
                );
            }
            for b in 0..e.bottoms.len() {
                let name = self.blob_names[e.bottoms[b]].clone();
                if contributes {
                    under_loss.insert(name.clone());
                } else {
                    e.bottom_need_backward[b] = false;
                }
                if !e.bottom_need_backward[b] {
                    skip_backp.insert(name);
                }
            }
        }
        if force_backward {
            for e in &mut self.layers {
                e.need_backward = true;
                for b in 0..e.bottoms.len() {
                    let v = e.bottom_need_backward[b] || e.layer.allow_force_backward(b);
                    e.bottom_need_backward[b] = v;
                    self.blob_need_backward[e.bottoms[b]] |= v;
                }
                let n = e.layer.blobs().len();
                e.layer.base_mut().param_propagate_down = vec![true; n];
            }
        }
    }

    /// Runs every layer's forward; returns the weighted loss.
    pub fn forward(&mut self, rng: &mut CaffeRng) -> Result<f32> {
        self.forward_range(rng, 0, self.layers.len())
    }

    /// Forward over layers [start, end) (fused chains inside the range run fused).
    pub fn forward_range(&mut self, rng: &mut CaffeRng, start: usize, end: usize) -> Result<f32> {
        let _awake = self.keep_workers_awake();
        let mut loss = 0f32;
        let mut li = start;
        while li < end {
            if let Some(ci) = self
                .fused_chain_from(li)
                .filter(|&c| self.fused[c].last() < end)
            {
                if self.forward_fused(ci)? {
                    li = self.fused[ci].last() + 1;
                    continue;
                }
            }
            loss += self.forward_layer(rng, li)?;
            li += 1;
        }
        Ok(loss)
    }

    /// Chains run fused only on the CPU backend (the GPU runs each layer's kernels).
    fn fusion_on(&self) -> bool {
        self.cpu_fusion && self.gpu.is_none()
    }

    /// The fused chain (`fuse`) that starts at layer `li`, if fusion is on.
    pub fn fused_chain_from(&self, li: usize) -> Option<usize> {
        if !self.fusion_on() {
            return None;
        }
        self.fused.iter().position(|c| c.first() == li)
    }

    /// The fused chain that ends at layer `li`, if fusion is on.
    pub fn fused_chain_to(&self, li: usize) -> Option<usize> {
        if !self.fusion_on() {
            return None;
        }
        self.fused.iter().position(|c| c.last() == li)
    }

    pub fn fused_chains(&self) -> &[fuse::Chain] {
        &self.fused
    }

    /// Forward of fused chain `ci` (its layers reshaped first); false, having run nothing,
    /// when the shapes do not allow fusion (then run the layers one by one).
    pub fn forward_fused(&mut self, ci: usize) -> Result<bool> {
        fuse::forward(self, ci).with_context(|| {
            let name = self.layers[self.fused[ci].first()].param.name();
            format!("forward of the chain from layer '{name}'")
        })
    }

    /// Backward of fused chain `ci`, as its layers' backward passes would run it.
    pub fn backward_fused(&mut self, ci: usize) -> Result<()> {
        fuse::backward(self, ci).with_context(|| {
            let name = self.layers[self.fused[ci].first()].param.name();
            format!("backward of the chain from layer '{name}'")
        })
    }

    /// Reshapes layer `li` to its bottoms; returns its bottom and top blobs.
    pub(crate) fn reshape_layer(&mut self, li: usize) -> Result<(Vec<BlobRef>, Vec<BlobRef>)> {
        let e = &mut self.layers[li];
        let bottom: Vec<BlobRef> = e.bottoms.iter().map(|&i| self.blobs[i].clone()).collect();
        let top: Vec<BlobRef> = e.tops.iter().map(|&i| self.blobs[i].clone()).collect();
        e.layer.reshape(&bottom, &top).with_context(|| {
            format!(
                "reshaping layer '{}' ({})",
                e.param.name(),
                e.layer.type_name()
            )
        })?;
        Ok((bottom, top))
    }

    /// One layer's reshape + forward; returns its weighted loss.
    pub fn forward_layer(&mut self, rng: &mut CaffeRng, li: usize) -> Result<f32> {
        // A Scale running its own forward keeps its input again.
        for c in &mut self.fused {
            if matches!(c.kind, fuse::Kind::Normalize(n) if n.scale == li) {
                c.forward_fused = false;
            }
        }
        let (bottom, top) = self.reshape_layer(li)?;
        let e = &mut self.layers[li];
        let lname = e.param.name().to_string();
        let mut ctx = Ctx {
            rng,
            gpu: self.gpu.as_deref(),
        };
        forward_on(e.layer.as_mut(), &mut ctx, &bottom, &top)
            .with_context(|| format!("forward of layer '{lname}' ({})", e.layer.type_name()))?;
        let mut loss = 0f32;
        for (t, &w) in e.loss_weights.iter().enumerate() {
            if w != 0.0 {
                let d = top[t].data_buf();
                let g = top[t].diff_buf();
                let (d, g) = (d.borrow(), g.borrow());
                loss += d.iter().zip(g.iter()).map(|(a, b)| a * b).sum::<f32>();
            }
        }
        Ok(loss)
    }

    /// Backward through every layer that needs it, in reverse order (fused chains fused).
    pub fn backward(&mut self, rng: &mut CaffeRng) -> Result<()> {
        let _awake = self.keep_workers_awake();
        let mut li = self.layers.len();
        while li > 0 {
            li -= 1;
            if let Some(ci) = self.fused_chain_to(li) {
                let first = self.fused[ci].first();
                if self.layers[first].need_backward {
                    self.backward_fused(ci)?;
                }
                li = first;
                continue;
            }
            self.backward_layer(rng, li)?;
        }
        Ok(())
    }

    pub fn backward_layer(&mut self, rng: &mut CaffeRng, li: usize) -> Result<()> {
        if !self.layers[li].need_backward {
            return Ok(());
        }
        fuse::prepare_unfused_backward(self, li)?;
        let e = &mut self.layers[li];
        let bottom: Vec<BlobRef> = e.bottoms.iter().map(|&i| self.blobs[i].clone()).collect();
        let top: Vec<BlobRef> = e.tops.iter().map(|&i| self.blobs[i].clone()).collect();
        let mut ctx = Ctx {
            rng,
            gpu: self.gpu.as_deref(),
        };
        let lname = e.param.name().to_string();
        backward_on(
            e.layer.as_mut(),
            &mut ctx,
            &top,
            &e.bottom_need_backward,
            &bottom,
        )
        .with_context(|| format!("backward of layer '{lname}' ({})", e.layer.type_name()))
    }

    /// Keeps the CPU pool's workers polling for the span of a pass (`backend::cpu::workers`);
    /// a net on the GPU leaves them asleep.
    pub fn keep_workers_awake(&self) -> crate::backend::cpu::workers::Awake {
        if self.gpu.is_some() {
            return crate::backend::cpu::workers::Awake::none();
        }
        crate::backend::cpu::workers::keep_awake()
    }

    /// Forward then backward; returns the loss.
    pub fn forward_backward(&mut self, rng: &mut CaffeRng) -> Result<f32> {
        let loss = self.forward(rng)?;
        self.backward(rng)?;
        Ok(loss)
    }

    /// Zeroes the diffs of every learnable parameter (once per solver iteration).
    pub fn clear_param_diffs(&self) {
        for l in &self.learnable {
            l.blob.fill_diff(0.0);
        }
    }

    pub fn blob_by_name(&self, name: &str) -> Option<&BlobRef> {
        self.blob_names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.blobs[i])
    }

    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|e| e.param.name() == name)
    }

    pub fn layer_names(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|e| e.param.name().to_string())
            .collect()
    }

    /// Output blob names, in Caffe's order.
    pub fn output_names(&self) -> Vec<String> {
        self.outputs
            .iter()
            .map(|&i| self.blob_names[i].clone())
            .collect()
    }

    /// Loss weight of a blob if some layer's top gives one (for log suffixes).
    pub fn blob_loss_weight(&self, blob: usize) -> f32 {
        for e in &self.layers {
            for (t, &tid) in e.tops.iter().enumerate() {
                if tid == blob && e.loss_weights[t] != 0.0 {
                    return e.loss_weights[t];
                }
            }
        }
        0.0
    }

    /// Sets the data of an input blob by name.
    pub fn set_input(&self, name: &str, data: &[f32]) -> Result<()> {
        let b = self
            .blob_by_name(name)
            .ok_or_else(|| anyhow!("net '{}' has no blob '{name}'", self.name))?;
        b.set_data(data)
            .with_context(|| format!("setting input '{name}' ({})", shape_string(&b.shape())))
    }

    /// The shared buffer handle of a blob, for tests that alias checks.
    pub fn same_blob(a: &BlobRef, b: &BlobRef) -> bool {
        Rc::ptr_eq(a, b)
    }
}

pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Train => "TRAIN",
        Phase::Test => "TEST",
    }
}
