//! `crema`: train and test Caffe nets (`crema train --solver ...`), inspect Caffe's files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crema::cli;
use crema::proto::TextOptions;

#[derive(Parser)]
#[command(
    name = "crema",
    version,
    about = "A Caffe-compatible trainer: reads Caffe's files, trains on GPU or CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tell what Caffe files hold: nets, solvers, caffemodels, solverstates, binaryprotos.
    Inspect {
        /// Files to describe; the kind is detected from the content.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Drop prototxt fields the schema does not know (with a warning) instead of failing.
        #[arg(long = "allow-unknown-fields", alias = "allow_unknown_fields")]
        allow_unknown_fields: bool,
    },
    /// Train a net from a solver prototxt (Caffe's `caffe train`).
    Train {
        /// The solver prototxt.
        #[arg(long)]
        solver: PathBuf,
        /// Comma-separated caffemodels to fine-tune from (replaces the solver's `weights`).
        #[arg(long)]
        weights: Option<String>,
        /// A .solverstate to resume from.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// GPU ids (`0`, `0,1` or `all`); overrides solver_mode.
        #[arg(long)]
        gpu: Option<String>,
        /// Net state level of the train net.
        #[arg(long, default_value_t = 0)]
        level: i32,
        /// Comma-separated stages of the train net.
        #[arg(long, default_value = "")]
        stage: String,
        /// What SIGINT does between iterations: stop, snapshot or none.
        #[arg(
            long = "sigint_effect",
            alias = "sigint-effect",
            default_value = "stop"
        )]
        sigint_effect: String,
        /// What SIGHUP does between iterations: stop, snapshot or none.
        #[arg(
            long = "sighup_effect",
            alias = "sighup-effect",
            default_value = "snapshot"
        )]
        sighup_effect: String,
        #[arg(long = "allow-unknown-fields", alias = "allow_unknown_fields")]
        allow_unknown_fields: bool,
        /// Freeze layers by name or glob (comma-separated): lr_mult 0, decay_mult 0, BatchNorm
        /// use_global_stats true.
        #[arg(long, default_value = "")]
        freeze: String,
        /// Refuse to train when any blob you froze would still change.
        #[arg(long = "strict-freeze", alias = "strict_freeze")]
        strict_freeze: bool,
        /// After N iterations, compare every blob's hash with the audit's prediction.
        #[arg(long = "verify-freeze", alias = "verify_freeze")]
        verify_freeze: Option<i32>,
        /// No progress line on the terminal (also: CREMA_NO_PROGRESS=1). It is only ever drawn
        /// when stderr is a terminal; logs written to files or pipes never carry it.
        #[arg(long = "no-progress", alias = "no_progress")]
        no_progress: bool,
    },
    /// Print the freeze audit: which blobs training will change, and why.
    Audit {
        /// A solver prototxt (audits its train and test nets).
        #[arg(long)]
        solver: Option<PathBuf>,
        /// A single net prototxt (with --phase).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value = "TRAIN")]
        phase: String,
        #[arg(long)]
        weights: Option<String>,
        /// A .solverstate whose history is taken into account.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        #[arg(long, default_value = "")]
        freeze: String,
        #[arg(long = "allow-unknown-fields", alias = "allow_unknown_fields")]
        allow_unknown_fields: bool,
    },
    /// Build Caffe LMDBs from MNIST files or image lists (Caffe's convert_mnist_data and
    /// convert_imageset).
    Convert {
        #[command(subcommand)]
        what: ConvertWhat,
    },
    /// Mean image of an LMDB as a .binaryproto (Caffe's compute_image_mean).
    ComputeMean { lmdb: PathBuf, out: PathBuf },
    /// Compare two caffemodels blob by blob (exit 0 same, 1 different, 2 error).
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// Relative tolerance (max abs difference over max abs value) below which blobs count
        /// as the same.
        #[arg(long, default_value_t = 0.0)]
        tolerance: f64,
    },
    /// Score a trained model on its TEST net (Caffe's `caffe test`).
    Test {
        /// The net prototxt.
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated caffemodels.
        #[arg(long)]
        weights: String,
        /// Batches to run.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        #[arg(long)]
        gpu: Option<String>,
        #[arg(long, default_value_t = 0)]
        level: i32,
        #[arg(long, default_value = "")]
        stage: String,
        #[arg(long = "allow-unknown-fields", alias = "allow_unknown_fields")]
        allow_unknown_fields: bool,
    },
    /// Benchmark a net's forward and backward passes layer by layer (Caffe's `caffe time`).
    Time {
        /// The net prototxt.
        #[arg(long)]
        model: PathBuf,
        /// Timed iterations (after one warm-up pass).
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// TRAIN (default) or TEST.
        #[arg(long, default_value = "TRAIN")]
        phase: String,
        /// Net state level.
        #[arg(long, default_value_t = 0)]
        level: i32,
        /// Comma-separated net state stages.
        #[arg(long, default_value = "")]
        stage: String,
        #[arg(long = "allow-unknown-fields", alias = "allow_unknown_fields")]
        allow_unknown_fields: bool,
        /// Time on this GPU (one id).
        #[arg(long)]
        gpu: Option<String>,
        /// Also log the arithmetic of convolutions and inner products per forward-backward
        /// (bench/cpu.sh divides it by the GEMM rate to get the floor).
        #[arg(long)]
        flops: bool,
    },
    /// Draw training curves (loss and test accuracy against iterations) from Caffe or crema
    /// logs into a PNG.
    Plot {
        /// Training logs (glog format, as `caffe train` or `crema train` write to stderr).
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// The PNG to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// The picture's title.
        #[arg(long)]
        title: Option<String>,
        /// Scale of the loss axis: auto (log when losses span a factor of 20 or more), linear
        /// or log.
        #[arg(long = "loss-scale", alias = "loss_scale", default_value = "auto")]
        loss_scale: cli::plot::LossScale,
    },
    /// Describe the GPUs the CUDA driver sees (Caffe's `caffe device_query`).
    #[command(name = "device_query", alias = "device-query")]
    DeviceQuery {
        /// Device ids: `0`, `0,1` or `all` (default 0).
        #[arg(long)]
        gpu: Option<String>,
    },
    /// Run every GPU op against the CPU backend on random inputs of several shapes (layers
    /// forward and backward, solver updates) and print the max relative error per op; exit 1 on
    /// any failure, 2 when there is no usable GPU.
    Selftest {
        /// The GPU to test.
        #[arg(long, default_value_t = 0)]
        gpu: usize,
        /// Only ops whose name contains this (e.g. Convolution, solver, dropout-kernel).
        #[arg(long)]
        filter: Option<String>,
    },
    /// List the embedded CUDA kernels; with --check, compile them all through NVRTC (no GPU
    /// needed) and report registers, shared memory and spills per entry point.
    Kernels {
        #[arg(long)]
        check: bool,
        /// Build for GPU N (its own architecture, through the disk cache) and load every entry
        /// point into the driver.
        #[arg(long, value_name = "N")]
        load: Option<usize>,
        /// Target architecture (sm_90 for H100/H200, sm_80 for A100).
        #[arg(long, default_value = "sm_90")]
        arch: String,
        /// Print NVRTC's full log for each file.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Subcommand)]
enum ConvertWhat {
    /// MNIST IDX image and label files (gzip'd or not) -> LMDB.
    Mnist {
        images: PathBuf,
        labels: PathBuf,
        out: PathBuf,
    },
    /// `ROOT LIST OUT`: a list of `path label` lines, paths relative to ROOT -> LMDB.
    Imageset {
        root: PathBuf,
        list: PathBuf,
        out: PathBuf,
        #[arg(long = "resize_height", alias = "resize-height", default_value_t = 0)]
        resize_height: usize,
        #[arg(long = "resize_width", alias = "resize-width", default_value_t = 0)]
        resize_width: usize,
        /// Store images as grey levels.
        #[arg(long)]
        gray: bool,
        /// Shuffle the list (fixed seed).
        #[arg(long)]
        shuffle: bool,
        /// Store encoded images (the file itself when nothing changes it).
        #[arg(long)]
        encoded: bool,
        /// png or jpg; empty keeps each file's own format.
        #[arg(long = "encode_type", alias = "encode-type", default_value = "")]
        encode_type: String,
        /// Require every raw image to have the same size.
        #[arg(long = "check_size", alias = "check-size")]
        check_size: bool,
    },
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Inspect {
            files,
            allow_unknown_fields,
        } => {
            let opts = TextOptions {
                allow_unknown_fields,
            };
            let mut failed = 0;
            for f in &files {
                match cli::inspect::inspect_file(f, opts) {
                    Ok(text) => print!("{text}"),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        failed += 1;
                    }
                }
            }
            Ok(if failed > 0 { 1 } else { 0 })
        }
        Command::Audit {
            solver,
            model,
            phase,
            weights,
            snapshot,
            freeze,
            allow_unknown_fields,
        } => {
            let args = cli::audit::AuditArgs {
                solver,
                model,
                phase: cli::time::parse_phase(&phase)?,
                weights,
                snapshot,
                freeze: split_list(&freeze),
                text: TextOptions {
                    allow_unknown_fields,
                },
            };
            print!("{}", cli::audit::run_audit(&args)?.render());
            Ok(0)
        }
        Command::Convert { what } => {
            match what {
                ConvertWhat::Mnist {
                    images,
                    labels,
                    out,
                } => {
                    cli::convert::convert_mnist(&images, &labels, &out)?;
                }
                ConvertWhat::Imageset {
                    root,
                    list,
                    out,
                    resize_height,
                    resize_width,
                    gray,
                    shuffle,
                    encoded,
                    encode_type,
                    check_size,
                } => {
                    cli::convert::convert_imageset(&cli::convert::ImagesetArgs {
                        root,
                        list,
                        out,
                        resize_height,
                        resize_width,
                        gray,
                        shuffle,
                        encoded,
                        encode_type,
                        check_size,
                    })?;
                }
            }
            Ok(0)
        }
        Command::ComputeMean { lmdb, out } => {
            cli::convert::compute_mean(&lmdb, &out)?;
            Ok(0)
        }
        Command::Diff { a, b, tolerance } => match cli::diff::diff(&a, &b, tolerance) {
            Ok(r) => {
                print!("{}", r.report);
                Ok(if r.same { 0 } else { 1 })
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(2)
            }
        },
        Command::Train {
            solver,
            weights,
            snapshot,
            gpu,
            level,
            stage,
            sigint_effect,
            sighup_effect,
            allow_unknown_fields,
            freeze,
            strict_freeze,
            verify_freeze,
            no_progress,
        } => {
            let args = cli::train::TrainArgs {
                solver,
                weights,
                snapshot,
                gpu,
                level,
                stages: split_list(&stage),
                sigint_effect,
                sighup_effect,
                text: TextOptions {
                    allow_unknown_fields,
                },
                freeze: split_list(&freeze),
                strict_freeze,
                verify_freeze,
                no_progress,
            };
            cli::train::run_train(&args)?;
            Ok(0)
        }
        Command::Test {
            model,
            weights,
            iterations,
            gpu,
            level,
            stage,
            allow_unknown_fields,
        } => {
            let args = cli::train::TestArgs {
                model,
                weights,
                iterations,
                gpu,
                level,
                stages: split_list(&stage),
                text: TextOptions {
                    allow_unknown_fields,
                },
            };
            cli::train::run_test(&args)?;
            Ok(0)
        }
        Command::Time {
            model,
            iterations,
            phase,
            level,
            stage,
            allow_unknown_fields,
            gpu,
            flops,
        } => {
            let args = cli::time::TimeArgs {
                gpu,
                model,
                iterations,
                phase: cli::time::parse_phase(&phase)?,
                level,
                stages: split_list(&stage),
                text: TextOptions {
                    allow_unknown_fields,
                },
                flops,
            };
            cli::time::run_time(&args)?;
            Ok(0)
        }
        Command::Plot {
            logs,
            output,
            title,
            loss_scale,
        } => {
            let args = cli::plot::PlotArgs {
                logs,
                output,
                title,
                loss_scale,
            };
            cli::plot::run_plot(&args)?;
            println!("wrote {}", args.output.display());
            Ok(0)
        }
        Command::DeviceQuery { gpu } => {
            print!("{}", cli::device::device_query(gpu.as_deref())?);
            Ok(0)
        }
        Command::Selftest { gpu, filter } => {
            cli::selftest::run_selftest(&cli::selftest::SelftestArgs { gpu, filter })
        }
        Command::Kernels {
            check,
            load,
            arch,
            verbose,
        } => cli::kernels::run_kernels(&cli::kernels::KernelsArgs {
            check,
            load,
            arch,
            verbose,
        }),
    }
}

fn main() -> ExitCode {
    let args = cli::args::normalize_args(std::env::args());
    let cli = Cli::parse_from(args);
    if let Err(e) = crema::backend::cpu::workers::join_pool() {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
