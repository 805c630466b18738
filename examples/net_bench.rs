//! Whole-net forward + backward CPU time of a net (TRAIN phase), in variants run interleaved in
//! one process so that load on a shared machine hits them alike:
//!   fused        the default: chains of layers fused (`net::fuse`)
//!   unfused      every layer on its own
//! Process CPU time is stable on a loaded machine when run with one thread:
//!   RAYON_NUM_THREADS=1 cargo run --release --example net_bench -- [net.prototxt] [iterations]
//! (default: ResNet-20 of ../shared/fixtures/caffe/timing, 5 rounds). Prints the minimum per
//! variant and its ratio to the default.

use std::path::PathBuf;

use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{read_net_text, TextOptions};
use crema::rng::CaffeRng;

#[path = "common/clock.rs"]
mod clock;
use clock::cpu_ms;

fn main() -> anyhow::Result<()> {
    let shared = std::env::var("CREMA_SHARED").unwrap_or_else(|_| "../shared".into());
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "{shared}/fixtures/caffe/timing/resnet20_cifar.prototxt"
            ))
        });
    let rounds: usize = match std::env::args().nth(2) {
        Some(s) => s.parse()?,
        None => 5,
    };
    crema::util::glog::set_min_level(2);
    let param = read_net_text(&path, TextOptions::default())?;
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(1701);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false })?;
    let variants: [(&str, bool); 2] = [("fused", true), ("unfused", false)];
    let mut best = [f64::MAX; 2];
    for _ in 0..rounds {
        for (v, &(_, fused)) in variants.iter().enumerate() {
            net.cpu_fusion = fused;
            net.forward(&mut rng)?;
            net.backward(&mut rng)?;
            let t = cpu_ms();
            net.forward(&mut rng)?;
            net.backward(&mut rng)?;
            best[v] = best[v].min(cpu_ms() - t);
        }
    }
    println!(
        "{} ({} fused chains), CPU ms per forward-backward, best of {rounds}, {} thread(s)",
        path.display(),
        net.fused_chains().len(),
        rayon::current_num_threads(),
    );
    for (v, (name, ..)) in variants.iter().enumerate() {
        println!("{name:12} {:9.2} ms  {:5.3}x", best[v], best[v] / best[0]);
    }
    Ok(())
}
