//! `crema kernels`: the embedded CUDA kernels. `--check` compiles every kernel file through NVRTC
//! for one architecture (no GPU needed) and prints ptxas's resource report per entry point, so
//! that CI catches a kernel that does not compile, and registers and spills are visible in review.

use anyhow::{bail, Result};

use crate::backend::cuda::compile::{self, Resources, Target};
use crate::backend::cuda::CudaError;

/// What `crema kernels` does.
pub struct KernelsArgs {
    pub check: bool,
    /// Compile for the GPU in hand (through the disk cache) and load every entry point into the
    /// driver: device `load`.
    pub load: Option<usize>,
    pub arch: String,
    /// Print NVRTC's full log for every file.
    pub verbose: bool,
}

/// Runs the command; the exit code is 0 when every file compiled and every entry point of the
/// sources appears in ptxas's report.
pub fn run_kernels(args: &KernelsArgs) -> Result<u8> {
    if let Some(gpu) = args.load {
        return load_on_device(gpu);
    }
    if !args.check {
        print!("{}", list());
        return Ok(0);
    }
    let arch = compile::parse_arch(&args.arch)?;
    if !compile::nvrtc_present() {
        bail!(CudaError::NoNvrtc);
    }
    let (major, minor) = compile::nvrtc_version()?;
    let supported = compile::supported_archs()?;
    if !supported.contains(&arch) {
        bail!(
            "NVRTC {major}.{minor} cannot compile for sm_{arch}; it supports {}",
            supported
                .iter()
                .map(|a| format!("sm_{a}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "Compiling {} kernel files for sm_{arch} with NVRTC {major}.{minor} (ptxas -v)",
        compile::KERNEL_FILES.len()
    );
    let mut rows: Vec<(&str, Resources)> = Vec::new();
    let mut failures = Vec::new();
    let mut missing = Vec::new();
    let start = std::time::Instant::now();
    for f in compile::KERNEL_FILES {
        let expected = compile::entry_points(f.source);
        match compile::compile(f, Target::Cubin, arch, &["--ptxas-options=-v"]) {
            Ok(c) => {
                if args.verbose {
                    println!("---- {} ----\n{}", f.path, c.log.trim_end());
                }
                let report = compile::parse_ptxas_report(&c.log);
                for name in &expected {
                    match report.iter().find(|r| &r.name == name) {
                        Some(r) => rows.push((f.path, r.clone())),
                        None => missing.push(format!("{}: {name}", f.path)),
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let elapsed = start.elapsed();
    print!("{}", render_table(&rows));
    for e in &failures {
        eprintln!("error: {e}");
    }
    for m in &missing {
        eprintln!("error: entry point missing from ptxas's report: {m}");
    }
    let spilling = rows
        .iter()
        .filter(|(_, r)| r.spill_stores > 0 || r.spill_loads > 0)
        .count();
    let max_regs = rows.iter().map(|(_, r)| r.registers).max().unwrap_or(0);
    println!(
        "{} entry points in {} files for sm_{arch}: {} compile errors, {} missing from the report, {} with spills, \
         at most {} registers ({:.1} s)",
        rows.len(),
        compile::KERNEL_FILES.len(),
        failures.len(),
        missing.len(),
        spilling,
        max_regs,
        elapsed.as_secs_f64()
    );
    Ok(if failures.is_empty() && missing.is_empty() {
        0
    } else {
        1
    })
}

/// Builds every kernel file for device `gpu` (its exact architecture, through the disk cache)
/// and resolves every entry point in the driver: proves the images load, not that they compute
/// the right thing.
fn load_on_device(gpu: usize) -> Result<u8> {
    use crate::backend::cuda::{device, kernels::Kernels};
    let ctx = device::open(gpu)?;
    let kernels = Kernels::new(ctx)?;
    let (major, minor) = compile::nvrtc_version()?;
    let (target, build_arch) = compile::target_for_device(kernels.arch())?;
    println!(
        "Device {gpu}: sm_{}, {} multiprocessors; NVRTC {major}.{minor} builds {} for it; cache {}",
        kernels.arch(),
        kernels.sm_count(),
        match target {
            Target::Cubin => format!("sm_{build_arch} machine code"),
            Target::Ptx => format!("compute_{build_arch} PTX"),
        },
        compile::cache_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "(none)".into())
    );
    let start = std::time::Instant::now();
    let mut count = 0;
    for f in compile::KERNEL_FILES {
        let t = std::time::Instant::now();
        let names = compile::entry_points(f.source);
        for name in &names {
            let name: &'static str = Box::leak(name.clone().into_boxed_str());
            kernels.function(name)?;
            count += 1;
        }
        println!(
            "{:<24} {:>3} entry points loaded in {:.0} ms",
            f.path,
            names.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    println!(
        "{count} entry points loaded on device {gpu} in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}

/// The table: one row per entry point.
pub fn render_table(rows: &[(&str, Resources)]) -> String {
    let name_w = rows
        .iter()
        .map(|(_, r)| r.name.len())
        .max()
        .unwrap_or(11)
        .max(11);
    let file_w = rows.iter().map(|(f, _)| f.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:<file_w$}  {:<name_w$}  {:>9}  {:>10}  {:>11}  {:>12}  {:>11}\n",
        "file",
        "entry point",
        "registers",
        "smem bytes",
        "stack bytes",
        "spill stores",
        "spill loads"
    );
    for (f, r) in rows {
        let flag = if r.spill_stores > 0 || r.spill_loads > 0 {
            "  <- spills"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<file_w$}  {:<name_w$}  {:>9}  {:>10}  {:>11}  {:>12}  {:>11}{flag}\n",
            f, r.name, r.registers, r.shared_bytes, r.stack_bytes, r.spill_stores, r.spill_loads
        ));
    }
    out
}

/// The kernel files and their entry points (what `crema kernels` prints without `--check`).
pub fn list() -> String {
    let mut out = String::new();
    let mut total = 0;
    for f in compile::KERNEL_FILES {
        let names = compile::entry_points(f.source);
        total += names.len();
        out.push_str(&format!("{} ({} entry points)\n", f.path, names.len()));
        for n in names {
            out.push_str(&format!("  {n}\n"));
        }
    }
    out.push_str(&format!(
        "{total} entry points in {} files; `crema kernels --check [--arch sm_90]` compiles them\n",
        compile::KERNEL_FILES.len()
    ));
    out
}
