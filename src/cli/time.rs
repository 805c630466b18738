//! `crema time`: Caffe's `caffe time` benchmark: one warm-up forward and backward, then
//! per-iteration forward-backward times and per-layer averages, logged in Caffe's words.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::blob::BlobRef;
use crate::net::{BuildOptions, Net};
use crate::proto::caffe::{NetState, Phase};
use crate::proto::{read_net_text, TextOptions};
use crate::rng::CaffeRng;
use crate::util::glog::fmt_g;

pub struct TimeArgs {
    pub model: PathBuf,
    pub iterations: usize,
    pub phase: Phase,
    pub level: i32,
    pub stages: Vec<String>,
    pub text: TextOptions,
    /// `--gpu` as caffe takes it.
    pub gpu: Option<String>,
    /// Log the arithmetic of convolutions and inner products per forward-backward.
    pub flops: bool,
}

/// Per-layer and total timings, in milliseconds.
pub struct TimeReport {
    pub layers: Vec<(String, f64, f64)>,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub total_ms: f64,
    pub iterations: usize,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

pub fn parse_phase(s: &str) -> Result<Phase> {
    match s {
        "" | "TRAIN" | "train" => Ok(Phase::Train),
        "TEST" | "test" => Ok(Phase::Test),
        other => bail!("--phase must be TRAIN or TEST, not '{other}'"),
    }
}

pub fn run_time(args: &TimeArgs) -> Result<TimeReport> {
    if args.iterations == 0 {
        bail!("--iterations must be positive");
    }
    let gpu = super::backend::open(&super::backend::request(args.gpu.as_deref(), None)?)?;
    // Kernels are queued, not finished, when a launch returns: each timed span waits for them.
    let wait = || -> Result<()> {
        match &gpu {
            Some(g) => g.synchronize(),
            None => Ok(()),
        }
    };
    let param = read_net_text(&args.model, args.text)?;
    let state = NetState {
        phase: Some(args.phase as i32),
        level: Some(args.level),
        stage: args.stages.clone(),
    };
    let mut rng = CaffeRng::new(1701);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions::default())
        .with_context(|| format!("building {}", args.model.display()))?;
    super::backend::place(&mut net, &gpu);
    if args.flops {
        crate::info!(
            "Convolution and InnerProduct FLOPs per forward-backward: {} (3 x forward)",
            forward_backward_flops(&net)
        );
    }
    let _awake = net.keep_workers_awake();
    crate::info!("Performing Forward");
    let loss = net.forward(&mut rng)?;
    crate::info!("Initial loss: {}", fmt_g(loss as f64));
    crate::info!("Performing Backward");
    backward_all(&mut net, &mut rng, &mut |_, _| {})?;

    let n = net.layers.len();
    let mut fwd = vec![0f64; n];
    let mut bwd = vec![0f64; n];
    crate::info!("*** Benchmark begins ***");
    crate::info!("Testing for {} iterations.", args.iterations);
    let total = Instant::now();
    let (mut fwd_total, mut bwd_total) = (0f64, 0f64);
    for it in 1..=args.iterations {
        let iter_t = Instant::now();
        let t = Instant::now();
        // A chain the net runs fused (`net::fuse`) is timed as one step, under its first layer.
        let mut li = 0;
        while li < n {
            let lt = Instant::now();
            let next = match net.fused_chain_from(li) {
                Some(ci) if net.forward_fused(ci)? => net.fused_chains()[ci].last() + 1,
                _ => {
                    net.forward_layer(&mut rng, li)?;
                    li + 1
                }
            };
            wait()?;
            fwd[li] += ms(lt);
            li = next;
        }
        fwd_total += ms(t);
        let t = Instant::now();
        backward_all(&mut net, &mut rng, &mut |li, t| bwd[li] += t)?;
        bwd_total += ms(t);
        crate::info!(
            "Iteration: {it} forward-backward time: {} ms.",
            fmt_g(ms(iter_t))
        );
    }
    let total_ms = ms(total);
    let k = args.iterations as f64;
    crate::info!("Average time per layer: ");
    let mut layers = Vec::new();
    for li in 0..n {
        let name = net.layers[li].param.name().to_string();
        crate::info!("{name:>10}\tforward: {} ms.", fmt_g(fwd[li] / k));
        crate::info!("{name:>10}\tbackward: {} ms.", fmt_g(bwd[li] / k));
        layers.push((name, fwd[li] / k, bwd[li] / k));
    }
    crate::info!("Average Forward pass: {} ms.", fmt_g(fwd_total / k));
    crate::info!("Average Backward pass: {} ms.", fmt_g(bwd_total / k));
    crate::info!("Average Forward-Backward: {} ms.", fmt_g(total_ms / k));
    crate::info!("Total Time: {} ms.", fmt_g(total_ms));
    crate::info!("*** Benchmark ends ***");
    Ok(TimeReport {
        layers,
        forward_ms: fwd_total / k,
        backward_ms: bwd_total / k,
        total_ms,
        iterations: args.iterations,
    })
}

/// Floating-point operations of the net's convolutions and inner products in one
/// forward-backward: 2 per multiply-add, and backward counted as twice forward (weight and
/// input gradients), whether or not a bottom needs its gradient: the convention of the floor
/// in the timing table (`../shared/fixtures/caffe/timing/timing_table.md`).
pub fn forward_backward_flops(net: &Net) -> u64 {
    let mut macs = 0u64;
    for e in &net.layers {
        let blobs = e.layer.blobs();
        let Some(w) = blobs.first() else { continue };
        let (wc, w0) = (
            w.count() as u64,
            w.shape().first().copied().unwrap_or(1) as u64,
        );
        for (&b, &t) in e.bottoms.iter().zip(&e.tops) {
            let (bottom, top) = (&net.blobs[b], &net.blobs[t]);
            macs += match e.layer.type_name() {
                // Weights are (num_output, channels / group, kernel...): one pass of all of
                // them per output position.
                "Convolution" => wc * top.count() as u64 / w0.max(1),
                // The same product run from the top (image side) to the bottom (column side),
                // whose channels lead the weights.
                "Deconvolution" => wc * bottom.count() as u64 / w0.max(1),
                // M x K inputs, each multiplied into the N outputs (the top's last axis).
                "InnerProduct" => {
                    bottom.count() as u64 * top.shape().last().copied().unwrap_or(0) as u64
                }
                _ => 0,
            };
        }
    }
    2 * 3 * macs
}

/// `caffe time` calls every layer's Backward, whether or not the net needs it there; a fused
/// chain's backward is one step. `timed(layer, ms)` gets each step's time, queued GPU kernels
/// included.
fn backward_all(
    net: &mut Net,
    rng: &mut CaffeRng,
    timed: &mut dyn FnMut(usize, f64),
) -> Result<()> {
    let mut li = net.layers.len();
    while li > 0 {
        li -= 1;
        let lt = Instant::now();
        if let Some(ci) = net.fused_chain_to(li) {
            li = net.fused_chains()[ci].first();
            net.backward_fused(ci)?;
        } else {
            backward_layer_always(net, rng, li)?;
        }
        if let Some(g) = &net.gpu {
            g.synchronize()?;
        }
        timed(li, ms(lt));
    }
    Ok(())
}

fn backward_layer_always(net: &mut Net, rng: &mut CaffeRng, li: usize) -> Result<()> {
    let e = &mut net.layers[li];
    let bottom: Vec<BlobRef> = e.bottoms.iter().map(|&i| net.blobs[i].clone()).collect();
    let top: Vec<BlobRef> = e.tops.iter().map(|&i| net.blobs[i].clone()).collect();
    let mut ctx = crate::layers::Ctx {
        rng,
        gpu: net.gpu.as_deref(),
    };
    let name = e.param.name().to_string();
    crate::layers::backward_on(
        e.layer.as_mut(),
        &mut ctx,
        &top,
        &e.bottom_need_backward,
        &bottom,
    )
    .with_context(|| format!("backward of layer '{name}'"))
}
