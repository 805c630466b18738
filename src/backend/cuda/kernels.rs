//! Typed launch wrappers: one Rust function per kernel entry point in `kernels/*.cu`, with the
//! kernel's exact argument list, buffer-length checks, and the launch configuration the kernel
//! expects computed inside. Argument-order mistakes can happen in one place only: the
//! `launch!` lists below, which a test compares, type by type, with the C signatures in the
//! sources (no GPU needed).
//!
//! Buffers are cudarc device slices or views, taken as `&dyn DevicePtr<T>` (read) or
//! `&mut dyn DevicePtrMut<T>` (written). Element-wise ops whose output may be their input
//! (in-place layers) take an [`Io`], as the CPU backend's ops do. Wrappers launch on the stream
//! they are given and never synchronise, except [`Kernels::loss_find_bad_label`], which must
//! read its answer back.
//!
//! These wrappers can only run on a GPU; on a machine without one they compile and their
//! host-side pieces (partition policies, the Philox mirror, mode selection) are unit-tested.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    LaunchConfig, PushKernelArg, SyncOnDrop,
};
use cudarc::nvrtc::Ptx;

use super::compile::{self, Target};
use crate::backend::cpu::conv::ConvGeom;
use crate::backend::cpu::pooling::PoolGeom;

/// Threads per block of the element-wise and reduction kernels (`CREMA_THREADS` in common.cuh).
pub const THREADS: u32 = 256;
/// Elements per reduction chunk below which a chunk is not split further.
const CHUNK_ELEMS: usize = 4096;
/// Most chunks a per-channel reduction uses per channel.
const MAX_CHANNEL_CHUNKS: usize = 256;
/// Most chunks a whole-buffer reduction uses.
const MAX_SUM_CHUNKS: usize = 1024;

/// The compiled kernels of one device, loaded module by module at first use.
pub struct Kernels {
    ctx: Arc<CudaContext>,
    arch: u32,
    sm_count: u32,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

/// An element-wise op's input and output: two buffers, or one read then overwritten in place.
pub enum Io<'a> {
    Separate(&'a dyn DevicePtr<f32>, &'a mut dyn DevicePtrMut<f32>),
    InPlace(&'a mut dyn DevicePtrMut<f32>),
}

impl Io<'_> {
    pub fn len(&self) -> usize {
        match self {
            Io::Separate(x, y) => x.len().min(y.len()),
            Io::InPlace(y) => y.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (input pointer, output pointer) and the guards that record the accesses when dropped.
    fn pointers<'b>(&'b mut self, s: &'b CudaStream) -> (u64, u64, [Option<SyncOnDrop<'b>>; 2]) {
        match self {
            Io::Separate(x, y) => {
                let (xp, gx) = x.device_ptr(s);
                let (yp, gy) = y.device_ptr_mut(s);
                (xp, yp, [Some(gx), Some(gy)])
            }
            Io::InPlace(y) => {
                let (p, g) = y.device_ptr_mut(s);
                (p, p, [Some(g), None])
            }
        }
    }
}

/// A read buffer's pointer, after checking it holds `need` values.
fn input<'a, T>(
    s: &'a CudaStream,
    buf: &'a dyn DevicePtr<T>,
    need: usize,
    what: &str,
) -> Result<(u64, SyncOnDrop<'a>)> {
    if buf.len() < need {
        bail!(
            "{what}: the device buffer holds {} values, the kernel reads {need}",
            buf.len()
        );
    }
    Ok(buf.device_ptr(s))
}

/// A written buffer's pointer, after checking it holds `need` values.
fn output<'a, 'b: 'a, T>(
    s: &'a CudaStream,
    buf: &'a mut (dyn DevicePtrMut<T> + 'b),
    need: usize,
    what: &str,
) -> Result<(u64, SyncOnDrop<'a>)> {
    if buf.len() < need {
        bail!(
            "{what}: the device buffer holds {} values, the kernel writes {need}",
            buf.len()
        );
    }
    Ok(buf.device_ptr_mut(s))
}

fn opt_input<'a, T>(
    s: &'a CudaStream,
    buf: Option<&'a dyn DevicePtr<T>>,
    need: usize,
    what: &str,
) -> Result<(u64, Option<SyncOnDrop<'a>>)> {
    match buf {
        Some(b) => input(s, b, need, what).map(|(p, g)| (p, Some(g))),
        None => Ok((0, None)),
    }
}

fn opt_output<'a, 'b: 'a, T>(
    s: &'a CudaStream,
    buf: Option<&'a mut (dyn DevicePtrMut<T> + 'b)>,
    need: usize,
    what: &str,
) -> Result<(u64, Option<SyncOnDrop<'a>>)> {
    match buf {
        Some(b) => output(s, b, need, what).map(|(p, g)| (p, Some(g))),
        None => Ok((0, None)),
    }
}

fn check_len(have: usize, need: usize, what: &str) -> Result<()> {
    if have < need {
        bail!("{what}: the device buffer holds {have} values, the kernel needs {need}");
    }
    Ok(())
}

fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| anyhow!("{what} = {v} does not fit the kernel's 32-bit argument"))
}

/// Launches entry point `$name` with the listed arguments. Each argument is written
/// `name: type`, with the kernel's C parameter type: `cf32` (const float*), `mf32` (float*),
/// `ci32`/`mi32` (const int* / int*), `cf64`/`mf64` (double*), `mu64` (unsigned long long*), or
/// a scalar `i64`, `i32`, `u32`, `u64`, `f32`, `f64`. Pointers are CUdeviceptr values (u64); the
/// binding `let name: T = name;` makes the compiler hold each value to the listed type, and the
/// test `launch_lists_match_kernel_signatures` holds the lists to the .cu sources.
macro_rules! launch {
    (@ty cf32) => { u64 };
    (@ty mf32) => { u64 };
    (@ty ci32) => { u64 };
    (@ty mi32) => { u64 };
    (@ty cf64) => { u64 };
    (@ty mf64) => { u64 };
    (@ty mu64) => { u64 };
    (@ty i64) => { i64 };
    (@ty i32) => { i32 };
    (@ty u32) => { u32 };
    (@ty u64) => { u64 };
    (@ty f32) => { f32 };
    (@ty f64) => { f64 };
    ($k:expr, $s:expr, $name:literal, $cfg:expr; $($arg:ident: $ty:ident),* $(,)?) => {{
        $( let $arg: launch!(@ty $ty) = $arg; )*
        let f = $k.function($name)?;
        let mut b = $s.launch_builder(&f);
        $( b.arg(&$arg); )*
        // SAFETY: the argument list matches the kernel's C signature (checked against the source
        // by the tests), every buffer was checked to hold what the launch touches, and the grid is
        // the one the kernel's comment asks for.
        unsafe { b.launch($cfg) }.map_err(|e| anyhow!("launching {}: {e}", $name))?;
        Ok::<(), anyhow::Error>(())
    }};
}

// ---- Host-side policies (pure functions of the shape, so results never depend on the GPU) ----

/// Chunks per channel for a per-channel reduction over `outer * inner` positions.
pub fn channel_chunks(outer: usize, inner: usize) -> usize {
    (outer * inner)
        .div_ceil(CHUNK_ELEMS)
        .clamp(1, MAX_CHANNEL_CHUNKS)
}

/// Length of the f64 partial buffer a per-channel reduction needs.
pub fn channel_partials_len(channels: usize, outer: usize, inner: usize) -> usize {
    channels * channel_chunks(outer, inner)
}

/// Chunks for a whole-buffer reduction (loss, sum of squares) over `n` values.
pub fn sum_chunks(n: usize) -> usize {
    n.div_ceil(CHUNK_ELEMS).clamp(1, MAX_SUM_CHUNKS)
}

/// Length of the f64 partial buffer a Reduction over `num` rows of `dim` values needs.
pub fn reduction_partials_len(num: usize, dim: usize) -> usize {
    num * sum_chunks(dim)
}

/// Caffe's GPU dropout threshold: a unit is kept when its random word is > UINT_MAX * ratio
/// (computed in float, as Caffe's `static_cast<unsigned int>(UINT_MAX * threshold_)` is).
pub fn dropout_threshold(ratio: f32) -> u32 {
    (u32::MAX as f32 * ratio) as u32
}

/// Philox4x32-10, the host mirror of common.cuh's generator.
pub fn philox4x32_10(mut ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    const M0: u32 = 0xD251_1F53;
    const M1: u32 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    let (mut k0, mut k1) = (key[0], key[1]);
    for _ in 0..10 {
        let p0 = M0 as u64 * ctr[0] as u64;
        let p1 = M1 as u64 * ctr[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        ctr = [hi1 ^ ctr[1] ^ k0, lo1, hi0 ^ ctr[3] ^ k1, lo0];
        k0 = k0.wrapping_add(W0);
        k1 = k1.wrapping_add(W1);
    }
    ctr
}

/// The dropout mask the GPU draws for (seed, offset): 1 where element i is kept. Lets a test,
/// or the CPU backend, reproduce the GPU's masks exactly.
pub fn dropout_mask_host(seed: u64, offset: u64, n: usize, threshold: u32) -> Vec<f32> {
    let mut mask = vec![0f32; n];
    for (g, chunk) in mask.chunks_mut(4).enumerate() {
        let g = g as u64;
        let r = philox4x32_10(
            [
                g as u32,
                (g >> 32) as u32,
                offset as u32,
                (offset >> 32) as u32,
            ],
            [seed as u32, (seed >> 32) as u32],
        );
        for (j, m) in chunk.iter_mut().enumerate() {
            *m = if r[j] > threshold { 1.0 } else { 0.0 };
        }
    }
    mask
}

/// Caffe's Power special cases (as `cpu::activation::power_forward/backward` take them):
/// (forward mode, forward constant, backward mode); see activation.cu.
pub fn power_modes(power: f32, scale: f32, shift: f32) -> (i32, f32, i32) {
    let diff_scale = power * scale;
    let (fwd_mode, value) = if diff_scale == 0.0 {
        (0, if power == 0.0 { 1.0 } else { shift.powf(power) })
    } else {
        (1, 0.0)
    };
    let bwd_mode = if diff_scale == 0.0 || power == 1.0 {
        0
    } else if power == 2.0 {
        1
    } else if shift == 0.0 {
        2
    } else {
        3
    };
    (fwd_mode, value, bwd_mode)
}

/// Whether softmax over (outer, channels, inner) runs one warp per row (see softmax.cu).
pub fn softmax_uses_rows(channels: usize, inner: usize) -> bool {
    inner == 1 && channels >= 64
}

/// Adam's step scale: `rate * sqrt(1 - b2^t) / (1 - b1^t)` with t = iter + 1, in double, as
/// `solver::update` computes it.
pub fn adam_scale(local_rate: f32, beta1: f32, beta2: f32, iter: i32) -> f32 {
    let t = iter + 1;
    let correction =
        ((1.0 - (beta2 as f64).powi(t)).sqrt() / (1.0 - (beta1 as f64).powi(t))) as f32;
    local_rate * correction
}

/// 2-D convolution geometry as the conv kernels take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Conv2d {
    /// From the CPU backend's geometry (2-D only; N-D convolutions stay on the CPU for now).
    pub fn from_geom(g: &ConvGeom) -> Result<Conv2d> {
        if g.kernel.len() != 2 {
            bail!(
                "the CUDA im2col is 2-D; this convolution has {} spatial axes",
                g.kernel.len()
            );
        }
        Ok(Conv2d {
            channels: g.im_channels,
            height: g.im_shape[0],
            width: g.im_shape[1],
            kernel_h: g.kernel[0],
            kernel_w: g.kernel[1],
            pad_h: g.pad[0],
            pad_w: g.pad[1],
            stride_h: g.stride[0],
            stride_w: g.stride[1],
            dilation_h: g.dilation[0],
            dilation_w: g.dilation[1],
            out_h: g.col_shape[0],
            out_w: g.col_shape[1],
        })
    }

    pub fn im_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn col_len(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w * self.out_h * self.out_w
    }
}

/// Most spatial axes the N-D conv kernels take (`CONV_MAX_AXES` in conv.cu; Caffe's blobs have at
/// most 32 axes, so a convolution at most 31 spatial ones).
pub const CONV_MAX_AXES: usize = 32;

/// N-D convolution geometry as the N-D conv kernels take it: scalars, and the per-axis table they
/// read from device memory (im_shape, col_shape, kernel, pad, stride, dilation, each `nd` long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvNd {
    pub channels: usize,
    pub im_spatial: usize,
    pub col_spatial: usize,
    pub kernel_count: usize,
    pub table: Vec<i32>,
}

impl ConvNd {
    pub fn from_geom(g: &ConvGeom) -> Result<ConvNd> {
        let nd = g.kernel.len();
        if nd > CONV_MAX_AXES {
            bail!("the CUDA N-D im2col takes at most {CONV_MAX_AXES} spatial axes; this convolution has {nd}");
        }
        let mut table = Vec::with_capacity(6 * nd);
        for axis in [
            &g.im_shape,
            &g.col_shape,
            &g.kernel,
            &g.pad,
            &g.stride,
            &g.dilation,
        ] {
            for &v in axis.iter() {
                table.push(to_i32(v, "convolution geometry")?);
            }
        }
        Ok(ConvNd {
            channels: g.im_channels,
            im_spatial: g.im_spatial(),
            col_spatial: g.col_spatial(),
            kernel_count: g.kernel_count(),
            table,
        })
    }

    pub fn nd(&self) -> usize {
        self.table.len() / 6
    }

    pub fn im_len(&self) -> usize {
        self.channels * self.im_spatial
    }

    pub fn col_len(&self) -> usize {
        self.channels * self.kernel_count * self.col_spatial
    }
}

/// One strided-batched product: `C_z = alpha op(A_z) op(B_z) + beta C_z` for z < batch, with
/// `A_z = A + z * stride_a` etc. Row-major, as `cpu::blas::sgemm`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmShape {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl GemmShape {
    /// One product of contiguous matrices (leading dimensions are the row lengths).
    pub fn contiguous(
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        beta: f32,
    ) -> Self {
        GemmShape {
            trans_a,
            trans_b,
            m,
            n,
            k,
            alpha,
            beta,
            lda: if trans_a { m } else { k },
            ldb: if trans_b { k } else { n },
            ldc: n,
            batch: 1,
            stride_a: 0,
            stride_b: 0,
            stride_c: 0,
        }
    }

    /// Values each operand must hold: (A, B, C).
    pub fn needs(&self) -> (usize, usize, usize) {
        let last = |stride: usize| stride * self.batch.saturating_sub(1);
        let (ar, ac) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        let span = |rows: usize, cols: usize, ld: usize| {
            if rows == 0 || cols == 0 {
                0
            } else {
                (rows - 1) * ld + cols
            }
        };
        (
            last(self.stride_a) + span(ar, ac, self.lda),
            last(self.stride_b) + span(br, bc, self.ldb),
            last(self.stride_c) + span(self.m, self.n, self.ldc),
        )
    }

    fn validate(&self) -> Result<()> {
        let (_, ac) = if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (_, bc) = if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        if self.lda < ac.max(1) || self.ldb < bc.max(1) || self.ldc < self.n.max(1) {
            bail!(
                "sgemm: leading dimensions ({}, {}, {}) are shorter than the rows ({ac}, {bc}, {})",
                self.lda,
                self.ldb,
                self.ldc,
                self.n
            );
        }
        if self.batch > 65535 {
            bail!(
                "sgemm: a batch of {} products exceeds the grid's 65535",
                self.batch
            );
        }
        Ok(())
    }

    /// Whether the 128x128 tiles would fill the GPU (one wave at least); else the 64x64 tiles.
    /// Both accumulate each C element over k in ascending order with FMAs, so the choice never
    /// changes a result.
    pub fn use_large_tiles(&self, sm_count: u32) -> bool {
        let tiles = self.m.div_ceil(128) * self.n.div_ceil(128) * self.batch;
        tiles >= sm_count as usize
    }
}

impl Kernels {
    /// The kernels of `ctx`'s device. Nothing is compiled until a kernel is first used (or
    /// [`Kernels::load_all`] is called).
    pub fn new(ctx: Arc<CudaContext>) -> Result<Self> {
        let (major, minor) = ctx
            .compute_capability()
            .context("reading the compute capability")?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .context("reading the multiprocessor count")?;
        Ok(Kernels {
            ctx,
            arch: (major * 10 + minor) as u32,
            sm_count: sm_count.max(1) as u32,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        })
    }

    pub fn arch(&self) -> u32 {
        self.arch
    }

    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Compiles (or takes from the disk cache) and loads every kernel file now, so that the
    /// first training iteration does not pay for it.
    pub fn load_all(&self) -> Result<()> {
        for f in compile::KERNEL_FILES {
            self.module(f.family)?;
        }
        Ok(())
    }

    fn module(&self, family: &'static str) -> Result<Arc<CudaModule>> {
        if let Some(m) = self.modules.lock().expect("module table").get(family) {
            return Ok(m.clone());
        }
        let file = compile::kernel_file(family)
            .ok_or_else(|| anyhow!("no kernel file for family '{family}'"))?;
        let load = |c: compile::Compiled| -> Result<Arc<CudaModule>> {
            let ptx = match c.target {
                Target::Cubin => Ptx::from_binary(c.image),
                Target::Ptx => {
                    Ptx::from_src(String::from_utf8(c.image).context("NVRTC's PTX is not UTF-8")?)
                }
            };
            self.ctx
                .load_module(ptx)
                .map_err(|e| anyhow!("loading {} into the driver: {e}", file.path))
        };
        let module = match load(compile::module_image(file, self.arch)?) {
            Ok(m) => m,
            Err(_) => {
                // A stale or damaged cache entry: compile afresh once.
                compile::forget_cached(file, self.arch);
                load(compile::module_image(file, self.arch)?)?
            }
        };
        self.modules
            .lock()
            .expect("module table")
            .insert(family, module.clone());
        Ok(module)
    }

    /// The entry point `name` (its family is the prefix before the first `_`).
    pub fn function(&self, name: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().expect("function table").get(name) {
            return Ok(f.clone());
        }
        let family = name.split('_').next().unwrap_or(name);
        let family = compile::kernel_file(family)
            .ok_or_else(|| anyhow!("no kernel file holds '{name}'"))?
            .family;
        let f = self
            .module(family)?
            .load_function(name)
            .map_err(|e| anyhow!("kernel '{name}': {e}"))?;
        self.functions
            .lock()
            .expect("function table")
            .insert(name, f.clone());
        Ok(f)
    }

    /// Grid for a grid-stride loop over `n` items: enough blocks to fill the GPU a few times over,
    /// no more (the loop covers the rest; the grid never changes a result).
    fn grid_for(&self, n: usize) -> LaunchConfig {
        let blocks = n
            .div_ceil(THREADS as usize)
            .clamp(1, self.sm_count as usize * 32);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Grid for a warp-per-item kernel over `items` items.
    fn grid_for_warps(&self, items: usize) -> LaunchConfig {
        self.grid_for(items.saturating_mul(32))
    }

    fn blocks(grid: (u32, u32, u32)) -> LaunchConfig {
        LaunchConfig {
            grid_dim: grid,
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    // ---- activation.cu ------------------------------------------------------------------------

    pub fn activation_relu_fwd(&self, s: &CudaStream, mut io: Io, slope: f32) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_relu_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64, slope: f32)
    }

    /// `d` carries dy (in) and dx (out); `x` is the bottom data.
    pub fn activation_relu_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        x: &dyn DevicePtr<f32>,
        slope: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _gx) = input(s, x, n, "relu backward: x")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_relu_bwd_f32", self.grid_for(n as usize); dy: cf32, x: cf32, dx: mf32, n: i64, slope: f32)
    }

    pub fn activation_elu_fwd(&self, s: &CudaStream, mut io: Io, alpha: f32) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_elu_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64, alpha: f32)
    }

    pub fn activation_elu_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        x: &dyn DevicePtr<f32>,
        y: &dyn DevicePtr<f32>,
        alpha: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _gx) = input(s, x, n, "elu backward: x")?;
        let (y, _gy) = input(s, y, n, "elu backward: y")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_elu_bwd_f32", self.grid_for(n as usize); dy: cf32, x: cf32, y: cf32, dx: mf32, n: i64, alpha: f32)
    }

    pub fn activation_sigmoid_fwd(&self, s: &CudaStream, mut io: Io) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_sigmoid_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64)
    }

    pub fn activation_sigmoid_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        y: &dyn DevicePtr<f32>,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (y, _gy) = input(s, y, n, "sigmoid backward: y")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_sigmoid_bwd_f32", self.grid_for(n as usize); dy: cf32, y: cf32, dx: mf32, n: i64)
    }

    pub fn activation_tanh_fwd(&self, s: &CudaStream, mut io: Io) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_tanh_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64)
    }

    pub fn activation_tanh_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        y: &dyn DevicePtr<f32>,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (y, _gy) = input(s, y, n, "tanh backward: y")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_tanh_bwd_f32", self.grid_for(n as usize); dy: cf32, y: cf32, dx: mf32, n: i64)
    }

    pub fn activation_absval_fwd(&self, s: &CudaStream, mut io: Io) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_absval_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64)
    }

    pub fn activation_absval_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        x: &dyn DevicePtr<f32>,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _gx) = input(s, x, n, "absval backward: x")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_absval_bwd_f32", self.grid_for(n as usize); dy: cf32, x: cf32, dx: mf32, n: i64)
    }

    /// `y = (shift + scale * x)^power` with Caffe's special cases ([`power_modes`]).
    pub fn activation_power_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        power: f32,
        scale: f32,
        shift: f32,
    ) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (mode, value, _) = power_modes(power, scale, shift);
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_power_fwd_f32", self.grid_for(n as usize);
            x: cf32, y: mf32, n: i64, power: f32, scale: f32, shift: f32, mode: i32, value: f32)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn activation_power_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        x: &dyn DevicePtr<f32>,
        y: &dyn DevicePtr<f32>,
        power: f32,
        scale: f32,
        shift: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (_, _, mode) = power_modes(power, scale, shift);
        let (x, _gx) = input(s, x, n, "power backward: x")?;
        let (y, _gy) = input(s, y, n, "power backward: y")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_power_bwd_f32", self.grid_for(n as usize);
            dy: cf32, x: cf32, y: cf32, dx: mf32, n: i64, power: f32, scale: f32, shift: f32, mode: i32)
    }

    /// `y = outer * exp(inner * x)`; (inner, outer) from `cpu::activation::exp_scales`.
    pub fn activation_exp_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        inner: f32,
        outer: f32,
    ) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_exp_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64, inner: f32, outer: f32)
    }

    pub fn activation_exp_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        y: &dyn DevicePtr<f32>,
        inner: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (y, _gy) = input(s, y, n, "exp backward: y")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_exp_bwd_f32", self.grid_for(n as usize); dy: cf32, y: cf32, dx: mf32, n: i64, inner: f32)
    }

    /// `y = base_scale * ln(shift + scale * x)`; base_scale from `cpu::activation::log_scales`.
    pub fn activation_log_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        scale: f32,
        shift: f32,
        base_scale: f32,
    ) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_log_fwd_f32", self.grid_for(n as usize);
            x: cf32, y: mf32, n: i64, scale: f32, shift: f32, base_scale: f32)
    }

    pub fn activation_log_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        x: &dyn DevicePtr<f32>,
        scale: f32,
        shift: f32,
        num_scale: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _gx) = input(s, x, n, "log backward: x")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_log_bwd_f32", self.grid_for(n as usize);
            dy: cf32, x: cf32, dx: mf32, n: i64, scale: f32, shift: f32, num_scale: f32)
    }

    pub fn activation_bnll_fwd(&self, s: &CudaStream, mut io: Io) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_bnll_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64)
    }

    pub fn activation_bnll_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        x: &dyn DevicePtr<f32>,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _gx) = input(s, x, n, "bnll backward: x")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_bnll_bwd_f32", self.grid_for(n as usize); dy: cf32, x: cf32, dx: mf32, n: i64)
    }

    pub fn activation_threshold_fwd(&self, s: &CudaStream, mut io: Io, t: f32) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_threshold_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64, t: f32)
    }

    pub fn activation_clip_fwd(&self, s: &CudaStream, mut io: Io, lo: f32, hi: f32) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_clip_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64, lo: f32, hi: f32)
    }

    pub fn activation_clip_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        x: &dyn DevicePtr<f32>,
        lo: f32,
        hi: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _gx) = input(s, x, n, "clip backward: x")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_clip_bwd_f32", self.grid_for(n as usize);
            dy: cf32, x: cf32, dx: mf32, n: i64, lo: f32, hi: f32)
    }

    /// Writes `y` and the sigmoid `sig` (kept for backward; must be a third buffer).
    pub fn activation_swish_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        sig: &mut dyn DevicePtrMut<f32>,
        beta: f32,
    ) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (sg, _gs) = output(s, sig, n, "swish forward: sigmoid buffer")?;
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_swish_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, sg: mf32, n: i64, beta: f32)
    }

    pub fn activation_swish_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        y: &dyn DevicePtr<f32>,
        sig: &dyn DevicePtr<f32>,
        beta: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (y, _gy) = input(s, y, n, "swish backward: y")?;
        let (sg, _gs) = input(s, sig, n, "swish backward: sigmoid")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "activation_swish_bwd_f32", self.grid_for(n as usize);
            dy: cf32, y: cf32, sg: cf32, dx: mf32, n: i64, beta: f32)
    }

    // ---- dropout.cu ---------------------------------------------------------------------------

    /// Inverted dropout with the mask of draw (seed, offset) (see dropout.cu); `mask`, when given,
    /// receives it as 0/1 floats. `scale` is the layer's `1 / (1 - ratio)`.
    #[allow(clippy::too_many_arguments)]
    pub fn dropout_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        mask: Option<&mut dyn DevicePtrMut<f32>>,
        seed: u64,
        offset: u64,
        ratio: f32,
        scale: f32,
    ) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let threshold = dropout_threshold(ratio);
        let (mask, _gm) = opt_output(s, mask, n, "dropout forward: mask")?;
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "dropout_fwd_f32", self.grid_for((n as usize).div_ceil(4));
            x: cf32, y: mf32, mask: mf32, n: i64, seed: u64, offset: u64, threshold: u32, scale: f32)
    }

    /// Backward with the mask regenerated from (seed, offset).
    pub fn dropout_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        seed: u64,
        offset: u64,
        ratio: f32,
        scale: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let threshold = dropout_threshold(ratio);
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "dropout_bwd_f32", self.grid_for((n as usize).div_ceil(4));
            dy: cf32, dx: mf32, n: i64, seed: u64, offset: u64, threshold: u32, scale: f32)
    }

    /// Backward from a stored 0/1 mask.
    pub fn dropout_bwd_mask(
        &self,
        s: &CudaStream,
        mut d: Io,
        mask: &dyn DevicePtr<f32>,
        scale: f32,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (mask, _gm) = input(s, mask, n, "dropout backward: mask")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "dropout_bwd_mask_f32", self.grid_for(n as usize); dy: cf32, mask: cf32, dx: mf32, n: i64, scale: f32)
    }

    // ---- eltwise.cu ---------------------------------------------------------------------------

    /// `y = (accumulate ? y : 0) + coeff * x`.
    pub fn eltwise_sum_fwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        coeff: f32,
        accumulate: bool,
    ) -> Result<()> {
        let n = y.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _gx) = input(s, x, n, "eltwise sum: x")?;
        let (y, _gy) = y.device_ptr_mut(s);
        let (n, accumulate) = (n as i64, accumulate as i32);
        launch!(self, s, "eltwise_sum_fwd_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64, coeff: f32, accumulate: i32)
    }

    /// `y = a * b`.
    pub fn eltwise_prod_fwd(
        &self,
        s: &CudaStream,
        a: &dyn DevicePtr<f32>,
        b: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
    ) -> Result<()> {
        let n = y.len();
        if n == 0 {
            return Ok(());
        }
        let (a, _ga) = input(s, a, n, "eltwise prod: a")?;
        let (b, _gb) = input(s, b, n, "eltwise prod: b")?;
        let (y, _gy) = y.device_ptr_mut(s);
        let n = n as i64;
        launch!(self, s, "eltwise_prod_fwd_f32", self.grid_for(n as usize); a: cf32, b: cf32, y: mf32, n: i64)
    }

    /// `y = y * x` (the next input of a product).
    pub fn eltwise_prod_fwd_into(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
    ) -> Result<()> {
        let n = y.len();
        if n == 0 {
            return Ok(());
        }
        let (b, _gb) = input(s, x, n, "eltwise prod: x")?;
        let (y, _gy) = y.device_ptr_mut(s);
        let a = y;
        let n = n as i64;
        launch!(self, s, "eltwise_prod_fwd_f32", self.grid_for(n as usize); a: cf32, b: cf32, y: mf32, n: i64)
    }

    /// The first two inputs of a MAX.
    pub fn eltwise_max_first(
        &self,
        s: &CudaStream,
        a: &dyn DevicePtr<f32>,
        b: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        arg: &mut dyn DevicePtrMut<i32>,
    ) -> Result<()> {
        let n = y.len();
        if n == 0 {
            return Ok(());
        }
        let (a, _ga) = input(s, a, n, "eltwise max: a")?;
        let (b, _gb) = input(s, b, n, "eltwise max: b")?;
        let (arg, _gr) = output(s, arg, n, "eltwise max: argmax")?;
        let (y, _gy) = y.device_ptr_mut(s);
        let n = n as i64;
        launch!(self, s, "eltwise_max_first_f32", self.grid_for(n as usize); a: cf32, b: cf32, y: mf32, arg: mi32, n: i64)
    }

    /// Input `k` (>= 2) of a MAX.
    pub fn eltwise_max_next(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        arg: &mut dyn DevicePtrMut<i32>,
        k: usize,
    ) -> Result<()> {
        let n = y.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _gx) = input(s, x, n, "eltwise max: x")?;
        let (arg, _gr) = output(s, arg, n, "eltwise max: argmax")?;
        let (y, _gy) = y.device_ptr_mut(s);
        let (n, k) = (n as i64, to_i32(k, "eltwise input")?);
        launch!(self, s, "eltwise_max_next_f32", self.grid_for(n as usize); x: cf32, y: mf32, arg: mi32, n: i64, k: i32)
    }

    pub fn eltwise_sum_bwd(&self, s: &CudaStream, mut d: Io, coeff: f32) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "eltwise_sum_bwd_f32", self.grid_for(n as usize); dy: cf32, dx: mf32, n: i64, coeff: f32)
    }

    /// `dx = (y / x) * dy` (PROD without stable_prod_grad).
    pub fn eltwise_prod_bwd_quotient(
        &self,
        s: &CudaStream,
        mut d: Io,
        y: &dyn DevicePtr<f32>,
        x: &dyn DevicePtr<f32>,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (y, _gy) = input(s, y, n, "eltwise prod backward: y")?;
        let (x, _gx) = input(s, x, n, "eltwise prod backward: x")?;
        let (dy, dx, _g) = d.pointers(s);
        let n = n as i64;
        launch!(self, s, "eltwise_prod_bwd_quotient_f32", self.grid_for(n as usize); dy: cf32, y: cf32, x: cf32, dx: mf32, n: i64)
    }

    pub fn eltwise_max_bwd(
        &self,
        s: &CudaStream,
        mut d: Io,
        arg: &dyn DevicePtr<i32>,
        k: usize,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let (arg, _gr) = input(s, arg, n, "eltwise max backward: argmax")?;
        let (dy, dx, _g) = d.pointers(s);
        let (n, k) = (n as i64, to_i32(k, "eltwise input")?);
        launch!(self, s, "eltwise_max_bwd_f32", self.grid_for(n as usize); dy: cf32, arg: ci32, dx: mf32, n: i64, k: i32)
    }

    // ---- batchnorm.cu -------------------------------------------------------------------------

    /// Stage one of a per-channel sum over a (num, channels, spatial) blob (see batchnorm.cu):
    /// `partial` (at least [`channel_partials_len`]) receives `channels x chunks` doubles.
    /// Returns the chunk count to pass to [`Kernels::batchnorm_channel_finish`].
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_channel_partials(
        &self,
        s: &CudaStream,
        term: ChannelTerm,
        partial: &mut dyn DevicePtrMut<f64>,
        num: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<usize> {
        let count = num * channels * spatial;
        let chunks = channel_chunks(num, spatial);
        if count == 0 {
            return Ok(chunks);
        }
        let (a_buf, b_buf, mean_buf, mode) = match term {
            ChannelTerm::Sum(a) => (a, None, None, 0),
            ChannelTerm::SquaredDeviation(a, mean) => (a, None, Some(mean), 1),
            ChannelTerm::Product(a, b) => (a, Some(b), None, 2),
        };
        let (a, _ga) = input(s, a_buf, count, "channel sum: a")?;
        let (b, _gb) = opt_input(s, b_buf, count, "channel sum: b")?;
        let (mean, _gm) = opt_input(s, mean_buf, channels, "channel sum: mean")?;
        let (partial, _gp) = output(s, partial, channels * chunks, "channel sum: partials")?;
        let (num, channels_i, spatial) = (num as i64, channels as i64, spatial as i64);
        let mode: i32 = mode;
        let cfg = Self::blocks((channels as u32, chunks as u32, 1));
        launch!(self, s, "batchnorm_channel_partials_f32", cfg;
            a: cf32, b: cf32, mean: cf32, partial: mf64, num: i64, channels_i: i64, spatial: i64, mode: i32)?;
        Ok(chunks)
    }

    /// Stage two: `out[c] = sum of channel c's partials / divisor`.
    pub fn batchnorm_channel_finish(
        &self,
        s: &CudaStream,
        partial: &dyn DevicePtr<f64>,
        out: &mut dyn DevicePtrMut<f32>,
        channels: usize,
        chunks: usize,
        divisor: f64,
    ) -> Result<()> {
        if channels == 0 {
            return Ok(());
        }
        let (partial, _gp) = input(s, partial, channels * chunks, "channel sum: partials")?;
        let (out, _go) = output(s, out, channels, "channel sum: output")?;
        let chunks = chunks as i64;
        launch!(self, s, "batchnorm_channel_finish_f32", Self::blocks((channels as u32, 1, 1));
            partial: cf64, out: mf32, chunks: i64, divisor: f64)
    }

    /// The running-statistics update of a training-mode forward; `m` = num * spatial.
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_update_running(
        &self,
        s: &CudaStream,
        mean: &dyn DevicePtr<f32>,
        var: &dyn DevicePtr<f32>,
        mean_sum: &mut dyn DevicePtrMut<f32>,
        var_sum: &mut dyn DevicePtrMut<f32>,
        factor: &mut dyn DevicePtrMut<f32>,
        channels: usize,
        m: usize,
        maf: f32,
    ) -> Result<()> {
        let correction = if m > 1 {
            m as f32 / (m - 1) as f32
        } else {
            1.0
        };
        let (mean, _g1) = input(s, mean, channels, "batchnorm: mean")?;
        let (var, _g2) = input(s, var, channels, "batchnorm: variance")?;
        let (mean_sum, _g3) = output(s, mean_sum, channels, "batchnorm: stored mean")?;
        let (var_sum, _g4) = output(s, var_sum, channels, "batchnorm: stored variance")?;
        let (factor, _g5) = output(s, factor, 1, "batchnorm: stored factor")?;
        let channels = to_i32(channels, "channels")?;
        launch!(self, s, "batchnorm_update_running_f32", self.grid_for(channels.max(1) as usize);
            mean: cf32, var: cf32, mean_sum: mf32, var_sum: mf32, factor: mf32, channels: i32, maf: f32, correction: f32)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_global_stats(
        &self,
        s: &CudaStream,
        mean_sum: &dyn DevicePtr<f32>,
        var_sum: &dyn DevicePtr<f32>,
        factor: &dyn DevicePtr<f32>,
        mean: &mut dyn DevicePtrMut<f32>,
        var: &mut dyn DevicePtrMut<f32>,
        channels: usize,
    ) -> Result<()> {
        if channels == 0 {
            return Ok(());
        }
        let (mean_sum, _g1) = input(s, mean_sum, channels, "batchnorm: stored mean")?;
        let (var_sum, _g2) = input(s, var_sum, channels, "batchnorm: stored variance")?;
        let (factor, _g3) = input(s, factor, 1, "batchnorm: stored factor")?;
        let (mean, _g4) = output(s, mean, channels, "batchnorm: mean")?;
        let (var, _g5) = output(s, var, channels, "batchnorm: variance")?;
        let channels = to_i32(channels, "channels")?;
        launch!(self, s, "batchnorm_global_stats_f32", self.grid_for(channels as usize);
            mean_sum: cf32, var_sum: cf32, factor: cf32, mean: mf32, var: mf32, channels: i32)
    }

    pub fn batchnorm_std(
        &self,
        s: &CudaStream,
        var: &dyn DevicePtr<f32>,
        std: &mut dyn DevicePtrMut<f32>,
        channels: usize,
        eps: f32,
    ) -> Result<()> {
        if channels == 0 {
            return Ok(());
        }
        let (var, _g1) = input(s, var, channels, "batchnorm: variance")?;
        let (std, _g2) = output(s, std, channels, "batchnorm: std")?;
        let channels = to_i32(channels, "channels")?;
        launch!(self, s, "batchnorm_std_f32", self.grid_for(channels as usize); var: cf32, std: mf32, channels: i32, eps: f32)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_normalize(
        &self,
        s: &CudaStream,
        mut io: Io,
        mean: &dyn DevicePtr<f32>,
        std: &dyn DevicePtr<f32>,
        num: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        let n = num * channels * spatial;
        if n == 0 {
            return Ok(());
        }
        check_len(io.len(), n, "batchnorm normalize")?;
        let (mean, _g1) = input(s, mean, channels, "batchnorm: mean")?;
        let (std, _g2) = input(s, std, channels, "batchnorm: std")?;
        let (x, y, _g) = io.pointers(s);
        let (n, channels, spatial) = (n as i64, channels as i64, spatial as i64);
        launch!(self, s, "batchnorm_normalize_f32", self.grid_for(n as usize);
            x: cf32, mean: cf32, std: cf32, y: mf32, n: i64, channels: i64, spatial: i64)
    }

    /// Training-mode backward; `sum_dyy` and `sum_dy` are the per-channel sums of dy*y and dy
    /// (channel partials + finish with divisor 1).
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_bwd_train(
        &self,
        s: &CudaStream,
        mut d: Io,
        y: &dyn DevicePtr<f32>,
        std: &dyn DevicePtr<f32>,
        sum_dyy: &dyn DevicePtr<f32>,
        sum_dy: &dyn DevicePtr<f32>,
        num: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        let n = num * channels * spatial;
        if n == 0 {
            return Ok(());
        }
        check_len(d.len(), n, "batchnorm backward")?;
        let neg_inv_m = -1.0 / (num * spatial) as f32;
        let (y, _g1) = input(s, y, n, "batchnorm backward: y")?;
        let (std, _g2) = input(s, std, channels, "batchnorm backward: std")?;
        let (sum_dyy, _g3) = input(s, sum_dyy, channels, "batchnorm backward: sum of dy*y")?;
        let (sum_dy, _g4) = input(s, sum_dy, channels, "batchnorm backward: sum of dy")?;
        let (dy, dx, _g) = d.pointers(s);
        let (n, channels, spatial) = (n as i64, channels as i64, spatial as i64);
        launch!(self, s, "batchnorm_bwd_train_f32", self.grid_for(n as usize);
            dy: cf32, y: cf32, std: cf32, sum_dyy: cf32, sum_dy: cf32, dx: mf32, n: i64, channels: i64, spatial: i64,
            neg_inv_m: f32)
    }

    pub fn batchnorm_bwd_global(
        &self,
        s: &CudaStream,
        mut d: Io,
        std: &dyn DevicePtr<f32>,
        num: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        let n = num * channels * spatial;
        if n == 0 {
            return Ok(());
        }
        check_len(d.len(), n, "batchnorm backward")?;
        let (std, _g1) = input(s, std, channels, "batchnorm backward: std")?;
        let (dy, dx, _g) = d.pointers(s);
        let (n, channels, spatial) = (n as i64, channels as i64, spatial as i64);
        launch!(self, s, "batchnorm_bwd_global_f32", self.grid_for(n as usize);
            dy: cf32, std: cf32, dx: mf32, n: i64, channels: i64, spatial: i64)
    }

    // ---- scale.cu -----------------------------------------------------------------------------

    /// `y = scale[d] * x (+ bias[d])` over (outer, dim, inner).
    #[allow(clippy::too_many_arguments)]
    pub fn scale_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        scale: &dyn DevicePtr<f32>,
        bias: Option<&dyn DevicePtr<f32>>,
        outer: usize,
        dim: usize,
        inner: usize,
    ) -> Result<()> {
        let n = outer * dim * inner;
        if n == 0 {
            return Ok(());
        }
        check_len(io.len(), n, "scale forward")?;
        let (scale, _g1) = input(s, scale, dim, "scale forward: scale")?;
        let (bias, _g2) = opt_input(s, bias, dim, "scale forward: bias")?;
        let (x, y, _g) = io.pointers(s);
        let (n, dim, inner) = (n as i64, dim as i64, inner as i64);
        launch!(self, s, "scale_fwd_f32", self.grid_for(n as usize);
            x: cf32, scale: cf32, bias: cf32, y: mf32, n: i64, dim: i64, inner: i64)
    }

    /// `y = x + bias[d]` over (outer, dim, inner): Bias layers, and Convolution/InnerProduct bias.
    pub fn scale_bias_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        bias: &dyn DevicePtr<f32>,
        outer: usize,
        dim: usize,
        inner: usize,
    ) -> Result<()> {
        let n = outer * dim * inner;
        if n == 0 {
            return Ok(());
        }
        check_len(io.len(), n, "bias forward")?;
        let (bias, _g1) = input(s, bias, dim, "bias forward: bias")?;
        let (x, y, _g) = io.pointers(s);
        let (n, dim, inner) = (n as i64, dim as i64, inner as i64);
        launch!(self, s, "scale_bias_fwd_f32", self.grid_for(n as usize); x: cf32, bias: cf32, y: mf32, n: i64, dim: i64, inner: i64)
    }

    /// Stage one of `g[d] = sum over (o, i) of a*b` (or of a); returns the chunk count.
    #[allow(clippy::too_many_arguments)]
    pub fn scale_grad_partials(
        &self,
        s: &CudaStream,
        a: &dyn DevicePtr<f32>,
        b: Option<&dyn DevicePtr<f32>>,
        partial: &mut dyn DevicePtrMut<f64>,
        outer: usize,
        dim: usize,
        inner: usize,
    ) -> Result<usize> {
        let n = outer * dim * inner;
        let chunks = channel_chunks(outer, inner);
        if n == 0 {
            return Ok(chunks);
        }
        let (a, _g1) = input(s, a, n, "scale gradient: a")?;
        let (b, _g2) = opt_input(s, b, n, "scale gradient: b")?;
        let (partial, _g3) = output(s, partial, dim * chunks, "scale gradient: partials")?;
        let cfg = Self::blocks((dim as u32, chunks as u32, 1));
        let (outer, dim, inner) = (outer as i64, dim as i64, inner as i64);
        launch!(self, s, "scale_grad_partials_f32", cfg; a: cf32, b: cf32, partial: mf64, outer: i64, dim: i64, inner: i64)?;
        Ok(chunks)
    }

    pub fn scale_grad_finish(
        &self,
        s: &CudaStream,
        partial: &dyn DevicePtr<f64>,
        g: &mut dyn DevicePtrMut<f32>,
        dim: usize,
        chunks: usize,
        accumulate: bool,
    ) -> Result<()> {
        if dim == 0 {
            return Ok(());
        }
        let (partial, _g1) = input(s, partial, dim * chunks, "scale gradient: partials")?;
        let (g, _g2) = output(s, g, dim, "scale gradient: output")?;
        let (chunks, accumulate) = (chunks as i64, accumulate as i32);
        launch!(self, s, "scale_grad_finish_f32", Self::blocks((dim as u32, 1, 1)); partial: cf64, g: mf32, chunks: i64, accumulate: i32)
    }

    // ---- pooling.cu ---------------------------------------------------------------------------

    fn pool_args(g: &PoolGeom) -> Result<[i32; 10]> {
        Ok([
            to_i32(g.height, "pooling height")?,
            to_i32(g.width, "pooling width")?,
            to_i32(g.pooled_height, "pooled height")?,
            to_i32(g.pooled_width, "pooled width")?,
            to_i32(g.kernel_h, "kernel_h")?,
            to_i32(g.kernel_w, "kernel_w")?,
            to_i32(g.stride_h, "stride_h")?,
            to_i32(g.stride_w, "stride_w")?,
            to_i32(g.pad_h, "pad_h")?,
            to_i32(g.pad_w, "pad_w")?,
        ])
    }

    /// MAX pooling; `mask` (argmax as int, needed by backward) and `top_mask` (Caffe's optional
    /// second top, as float) are each optional.
    pub fn pooling_max_fwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        mask: Option<&mut dyn DevicePtrMut<i32>>,
        top_mask: Option<&mut dyn DevicePtrMut<f32>>,
        g: &PoolGeom,
    ) -> Result<()> {
        let (ni, no) = (
            g.planes * g.height * g.width,
            g.planes * g.pooled_height * g.pooled_width,
        );
        if no == 0 {
            return Ok(());
        }
        let [h, w, ph, pw, kh, kw, sh, sw, pad_h, pad_w] = Self::pool_args(g)?;
        let (x, _g1) = input(s, x, ni, "max pooling: x")?;
        let (y, _g2) = output(s, y, no, "max pooling: y")?;
        let (mask, _g3) = opt_output(s, mask, no, "max pooling: mask")?;
        let (top_mask, _g4) = opt_output(s, top_mask, no, "max pooling: top mask")?;
        let planes = g.planes as i64;
        launch!(self, s, "pooling_max_fwd_f32", self.grid_for(no);
            x: cf32, y: mf32, mask: mi32, top_mask: mf32, planes: i64, h: i32, w: i32, ph: i32, pw: i32, kh: i32, kw: i32,
            sh: i32, sw: i32, pad_h: i32, pad_w: i32)
    }

    pub fn pooling_max_bwd(
        &self,
        s: &CudaStream,
        dy: &dyn DevicePtr<f32>,
        mask: &dyn DevicePtr<i32>,
        dx: &mut dyn DevicePtrMut<f32>,
        g: &PoolGeom,
    ) -> Result<()> {
        let (ni, no) = (
            g.planes * g.height * g.width,
            g.planes * g.pooled_height * g.pooled_width,
        );
        if ni == 0 {
            return Ok(());
        }
        let [h, w, ph, pw, kh, kw, sh, sw, pad_h, pad_w] = Self::pool_args(g)?;
        let (dy, _g1) = input(s, dy, no, "max pooling backward: dy")?;
        let (mask, _g2) = input(s, mask, no, "max pooling backward: mask")?;
        let (dx, _g3) = output(s, dx, ni, "max pooling backward: dx")?;
        let planes = g.planes as i64;
        launch!(self, s, "pooling_max_bwd_f32", self.grid_for(ni);
            dy: cf32, mask: ci32, dx: mf32, planes: i64, h: i32, w: i32, ph: i32, pw: i32, kh: i32, kw: i32, sh: i32,
            sw: i32, pad_h: i32, pad_w: i32)
    }

    pub fn pooling_ave_fwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        g: &PoolGeom,
    ) -> Result<()> {
        let (ni, no) = (
            g.planes * g.height * g.width,
            g.planes * g.pooled_height * g.pooled_width,
        );
        if no == 0 {
            return Ok(());
        }
        let [h, w, ph, pw, kh, kw, sh, sw, pad_h, pad_w] = Self::pool_args(g)?;
        let (x, _g1) = input(s, x, ni, "average pooling: x")?;
        let (y, _g2) = output(s, y, no, "average pooling: y")?;
        let planes = g.planes as i64;
        launch!(self, s, "pooling_ave_fwd_f32", self.grid_for(no);
            x: cf32, y: mf32, planes: i64, h: i32, w: i32, ph: i32, pw: i32, kh: i32, kw: i32, sh: i32, sw: i32, pad_h: i32,
            pad_w: i32)
    }

    pub fn pooling_ave_bwd(
        &self,
        s: &CudaStream,
        dy: &dyn DevicePtr<f32>,
        dx: &mut dyn DevicePtrMut<f32>,
        g: &PoolGeom,
    ) -> Result<()> {
        let (ni, no) = (
            g.planes * g.height * g.width,
            g.planes * g.pooled_height * g.pooled_width,
        );
        if ni == 0 {
            return Ok(());
        }
        let [h, w, ph, pw, kh, kw, sh, sw, pad_h, pad_w] = Self::pool_args(g)?;
        let (dy, _g1) = input(s, dy, no, "average pooling backward: dy")?;
        let (dx, _g2) = output(s, dx, ni, "average pooling backward: dx")?;
        let planes = g.planes as i64;
        launch!(self, s, "pooling_ave_bwd_f32", self.grid_for(ni);
            dy: cf32, dx: mf32, planes: i64, h: i32, w: i32, ph: i32, pw: i32, kh: i32, kw: i32, sh: i32, sw: i32, pad_h: i32,
            pad_w: i32)
    }

    /// Global AVE pooling: `y[p]` = mean of plane p (`spatial` = H*W values).
    pub fn pooling_global_ave_fwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        planes: usize,
        spatial: usize,
    ) -> Result<()> {
        if planes == 0 {
            return Ok(());
        }
        let (x, _g1) = input(s, x, planes * spatial, "global pooling: x")?;
        let (y, _g2) = output(s, y, planes, "global pooling: y")?;
        let (planes_i, spatial) = (planes as i64, spatial as i64);
        launch!(self, s, "pooling_global_ave_fwd_f32", self.grid_for_warps(planes); x: cf32, y: mf32, planes_i: i64, spatial: i64)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn pooling_global_max_fwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        mask: Option<&mut dyn DevicePtrMut<i32>>,
        top_mask: Option<&mut dyn DevicePtrMut<f32>>,
        planes: usize,
        spatial: usize,
    ) -> Result<()> {
        if planes == 0 {
            return Ok(());
        }
        let (x, _g1) = input(s, x, planes * spatial, "global pooling: x")?;
        let (y, _g2) = output(s, y, planes, "global pooling: y")?;
        let (mask, _g3) = opt_output(s, mask, planes, "global pooling: mask")?;
        let (top_mask, _g4) = opt_output(s, top_mask, planes, "global pooling: top mask")?;
        let (planes_i, spatial) = (planes as i64, spatial as i64);
        launch!(self, s, "pooling_global_max_fwd_f32", self.grid_for_warps(planes);
            x: cf32, y: mf32, mask: mi32, top_mask: mf32, planes_i: i64, spatial: i64)
    }

    // ---- softmax.cu ---------------------------------------------------------------------------

    /// Softmax over the channel axis, choosing the kernel by shape ([`softmax_uses_rows`]).
    pub fn softmax_forward(
        &self,
        s: &CudaStream,
        io: Io,
        outer: usize,
        channels: usize,
        inner: usize,
    ) -> Result<()> {
        if softmax_uses_rows(channels, inner) {
            self.softmax_fwd_rows(s, io, outer, channels)
        } else {
            self.softmax_fwd(s, io, outer, channels, inner)
        }
    }

    /// `d` carries dy (in) and dx (out).
    pub fn softmax_backward(
        &self,
        s: &CudaStream,
        y: &dyn DevicePtr<f32>,
        d: Io,
        outer: usize,
        channels: usize,
        inner: usize,
    ) -> Result<()> {
        if softmax_uses_rows(channels, inner) {
            self.softmax_bwd_rows(s, y, d, outer, channels)
        } else {
            self.softmax_bwd(s, y, d, outer, channels, inner)
        }
    }

    /// The column kernel (one thread per (outer, inner) position).
    pub fn softmax_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        outer: usize,
        channels: usize,
        inner: usize,
    ) -> Result<()> {
        let n = outer * channels * inner;
        if n == 0 {
            return Ok(());
        }
        check_len(io.len(), n, "softmax")?;
        let (x, y, _g) = io.pointers(s);
        let (outer_i, channels, inner_i) = (outer as i64, channels as i64, inner as i64);
        launch!(self, s, "softmax_fwd_f32", self.grid_for(outer * inner); x: cf32, y: mf32, outer_i: i64, channels: i64, inner_i: i64)
    }

    pub fn softmax_bwd(
        &self,
        s: &CudaStream,
        y: &dyn DevicePtr<f32>,
        mut d: Io,
        outer: usize,
        channels: usize,
        inner: usize,
    ) -> Result<()> {
        let n = outer * channels * inner;
        if n == 0 {
            return Ok(());
        }
        check_len(d.len(), n, "softmax backward")?;
        let (y, _g1) = input(s, y, n, "softmax backward: y")?;
        let (dy, dx, _g) = d.pointers(s);
        let (outer_i, channels, inner_i) = (outer as i64, channels as i64, inner as i64);
        launch!(self, s, "softmax_bwd_f32", self.grid_for(outer * inner);
            y: cf32, dy: cf32, dx: mf32, outer_i: i64, channels: i64, inner_i: i64)
    }

    /// The row kernel (one warp per row; inner must be 1).
    pub fn softmax_fwd_rows(
        &self,
        s: &CudaStream,
        mut io: Io,
        rows: usize,
        channels: usize,
    ) -> Result<()> {
        let n = rows * channels;
        if n == 0 {
            return Ok(());
        }
        check_len(io.len(), n, "softmax")?;
        let (x, y, _g) = io.pointers(s);
        let (rows_i, channels) = (rows as i64, channels as i64);
        launch!(self, s, "softmax_fwd_rows_f32", self.grid_for_warps(rows); x: cf32, y: mf32, rows_i: i64, channels: i64)
    }

    pub fn softmax_bwd_rows(
        &self,
        s: &CudaStream,
        y: &dyn DevicePtr<f32>,
        mut d: Io,
        rows: usize,
        channels: usize,
    ) -> Result<()> {
        let n = rows * channels;
        if n == 0 {
            return Ok(());
        }
        check_len(d.len(), n, "softmax backward")?;
        let (y, _g1) = input(s, y, n, "softmax backward: y")?;
        let (dy, dx, _g) = d.pointers(s);
        let (rows_i, channels) = (rows as i64, channels as i64);
        launch!(self, s, "softmax_bwd_rows_f32", self.grid_for_warps(rows); y: cf32, dy: cf32, dx: mf32, rows_i: i64, channels: i64)
    }

    // ---- loss.cu ------------------------------------------------------------------------------

    /// The first label that is neither `ignore` nor a class index in [0, classes), if any. Reads
    /// one value back (synchronises the stream): call it where the CPU layer checks its labels.
    pub fn loss_find_bad_label(
        &self,
        s: &Arc<CudaStream>,
        labels: &dyn DevicePtr<f32>,
        n: usize,
        classes: usize,
        ignore: Option<i32>,
        scratch: &mut CudaSlice<u64>,
    ) -> Result<Option<usize>> {
        if n == 0 {
            return Ok(None);
        }
        check_len(scratch.len(), 1, "label check: scratch")?;
        s.memcpy_htod(&[u64::MAX][..], scratch)
            .context("label check: resetting the scratch value")?;
        {
            let (labels, _g1) = input(s, labels, n, "label check: labels")?;
            let (first_bad, _g2) = scratch.device_ptr_mut(s);
            let (n_i, classes) = (n as i64, to_i32(classes, "classes")?);
            let (has_ignore, ignore) = (ignore.is_some() as i32, ignore.unwrap_or(0));
            let r: Result<()> = launch!(self, s, "loss_find_bad_label_f32", self.grid_for(n);
                labels: cf32, n_i: i64, classes: i32, has_ignore: i32, ignore: i32, first_bad: mu64);
            r?;
        }
        let mut host = [0u64; 1];
        s.memcpy_dtoh(&*scratch, &mut host[..])
            .context("label check: reading the result")?;
        s.synchronize().context("label check: synchronising")?;
        super::gpu::record_upload(8);
        super::gpu::record_download(8);
        Ok(if host[0] == u64::MAX {
            None
        } else {
            Some(host[0] as usize)
        })
    }

    /// Stage one of the softmax loss; `partial_loss` and `partial_count` hold at least
    /// [`sum_chunks`]`(outer * inner)` doubles. Returns the chunk count.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_softmax_fwd_partials(
        &self,
        s: &CudaStream,
        prob: &dyn DevicePtr<f32>,
        labels: &dyn DevicePtr<f32>,
        partial_loss: &mut dyn DevicePtrMut<f64>,
        partial_count: &mut dyn DevicePtrMut<f64>,
        outer: usize,
        classes: usize,
        inner: usize,
        ignore: Option<i32>,
    ) -> Result<usize> {
        let positions = outer * inner;
        let chunks = sum_chunks(positions);
        let (prob, _g1) = input(
            s,
            prob,
            outer * classes * inner,
            "softmax loss: probabilities",
        )?;
        let (labels, _g2) = input(s, labels, positions, "softmax loss: labels")?;
        let (partial_loss, _g3) = output(s, partial_loss, chunks, "softmax loss: partial losses")?;
        let (partial_count, _g4) =
            output(s, partial_count, chunks, "softmax loss: partial counts")?;
        let (outer, classes, inner) = (outer as i64, classes as i64, inner as i64);
        let (has_ignore, ignore) = (ignore.is_some() as i32, ignore.unwrap_or(0));
        launch!(self, s, "loss_softmax_fwd_partials_f32", Self::blocks((chunks as u32, 1, 1));
            prob: cf32, labels: cf32, partial_loss: mf64, partial_count: mf64, outer: i64, classes: i64, inner: i64,
            has_ignore: i32, ignore: i32)?;
        Ok(chunks)
    }

    /// Stage two: `loss_out[0]` = the normalised loss, `valid_out[0]` = the valid count.
    /// `mode` is the proto's NormalizationMode value (FULL 0, VALID 1, BATCH_SIZE 2, NONE 3).
    #[allow(clippy::too_many_arguments)]
    pub fn loss_softmax_fwd_finish(
        &self,
        s: &CudaStream,
        partial_loss: &dyn DevicePtr<f64>,
        partial_count: &dyn DevicePtr<f64>,
        chunks: usize,
        loss_out: &mut dyn DevicePtrMut<f32>,
        valid_out: &mut dyn DevicePtrMut<f32>,
        mode: i32,
        outer: usize,
        inner: usize,
    ) -> Result<()> {
        let (partial_loss, _g1) = input(s, partial_loss, chunks, "softmax loss: partial losses")?;
        let (partial_count, _g2) = input(s, partial_count, chunks, "softmax loss: partial counts")?;
        let (loss_out, _g3) = output(s, loss_out, 1, "softmax loss: loss")?;
        let (valid_out, _g4) = output(s, valid_out, 1, "softmax loss: valid count")?;
        let (chunks, outer, inner) = (chunks as i64, outer as i64, inner as i64);
        launch!(self, s, "loss_softmax_fwd_finish_f32", Self::blocks((1, 1, 1));
            partial_loss: cf64, partial_count: cf64, chunks: i64, loss_out: mf32, valid_out: mf32, mode: i32, outer: i64,
            inner: i64)
    }

    /// `dx = (p - onehot) * top_diff[0] / normalizer`, all on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_softmax_bwd(
        &self,
        s: &CudaStream,
        prob: &dyn DevicePtr<f32>,
        labels: &dyn DevicePtr<f32>,
        top_diff: &dyn DevicePtr<f32>,
        valid: &dyn DevicePtr<f32>,
        dx: &mut dyn DevicePtrMut<f32>,
        outer: usize,
        classes: usize,
        inner: usize,
        ignore: Option<i32>,
        mode: i32,
    ) -> Result<()> {
        let n = outer * classes * inner;
        if n == 0 {
            return Ok(());
        }
        let (prob, _g1) = input(s, prob, n, "softmax loss backward: probabilities")?;
        let (labels, _g2) = input(s, labels, outer * inner, "softmax loss backward: labels")?;
        let (top_diff, _g3) = input(s, top_diff, 1, "softmax loss backward: loss weight")?;
        let (valid, _g4) = input(s, valid, 1, "softmax loss backward: valid count")?;
        let (dx, _g5) = output(s, dx, n, "softmax loss backward: dx")?;
        let (outer, classes, inner) = (outer as i64, classes as i64, inner as i64);
        let (has_ignore, ignore) = (ignore.is_some() as i32, ignore.unwrap_or(0));
        launch!(self, s, "loss_softmax_bwd_f32", self.grid_for(n);
            prob: cf32, labels: cf32, top_diff: cf32, valid: cf32, dx: mf32, outer: i64, classes: i64, inner: i64,
            has_ignore: i32, ignore: i32, mode: i32)
    }

    /// Accuracy, stage one: per position, correct (0/1) and the label (-1 when ignored).
    #[allow(clippy::too_many_arguments)]
    pub fn loss_accuracy_terms(
        &self,
        s: &CudaStream,
        scores: &dyn DevicePtr<f32>,
        labels: &dyn DevicePtr<f32>,
        correct: &mut dyn DevicePtrMut<f32>,
        label_out: &mut dyn DevicePtrMut<i32>,
        outer: usize,
        classes: usize,
        inner: usize,
        top_k: usize,
        ignore: Option<i32>,
    ) -> Result<()> {
        let positions = outer * inner;
        if positions == 0 {
            return Ok(());
        }
        let (scores, _g1) = input(s, scores, outer * classes * inner, "accuracy: scores")?;
        let (labels, _g2) = input(s, labels, positions, "accuracy: labels")?;
        let (correct, _g3) = output(s, correct, positions, "accuracy: correct flags")?;
        let (label_out, _g4) = output(s, label_out, positions, "accuracy: labels out")?;
        let (outer, classes, inner, top_k) = (
            outer as i64,
            classes as i64,
            inner as i64,
            to_i32(top_k, "top_k")?,
        );
        let (has_ignore, ignore) = (ignore.is_some() as i32, ignore.unwrap_or(0));
        launch!(self, s, "loss_accuracy_terms_f32", self.grid_for(positions);
            scores: cf32, labels: cf32, correct: mf32, label_out: mi32, outer: i64, classes: i64, inner: i64, top_k: i32,
            has_ignore: i32, ignore: i32)
    }

    /// Accuracy, stage two: `accuracy[0]`, and per-class accuracies when `per_class` is given.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_accuracy_finish(
        &self,
        s: &CudaStream,
        correct: &dyn DevicePtr<f32>,
        label_out: &dyn DevicePtr<i32>,
        positions: usize,
        accuracy: &mut dyn DevicePtrMut<f32>,
        per_class: Option<&mut dyn DevicePtrMut<f32>>,
        classes: usize,
    ) -> Result<()> {
        let blocks = 1 + if per_class.is_some() { classes } else { 0 };
        let (correct, _g1) = input(s, correct, positions, "accuracy: correct flags")?;
        let (label_out, _g2) = input(s, label_out, positions, "accuracy: labels")?;
        let (accuracy, _g3) = output(s, accuracy, 1, "accuracy: output")?;
        let (per_class, _g4) = opt_output(s, per_class, classes, "accuracy: per-class output")?;
        let positions = positions as i64;
        launch!(self, s, "loss_accuracy_finish_f32", Self::blocks((blocks as u32, 1, 1));
            correct: cf32, label_out: ci32, positions: i64, accuracy: mf32, per_class: mf32)
    }

    /// Stage one of the sigmoid cross-entropy over `n` logits and targets; `partial_loss` and
    /// `partial_count` hold at least [`sum_chunks`]`(n)` doubles. Returns the chunk count (stage
    /// two is [`Kernels::loss_softmax_fwd_finish`]).
    #[allow(clippy::too_many_arguments)]
    pub fn loss_sigmoid_ce_fwd_partials(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        t: &dyn DevicePtr<f32>,
        partial_loss: &mut dyn DevicePtrMut<f64>,
        partial_count: &mut dyn DevicePtrMut<f64>,
        n: usize,
        ignore: Option<i32>,
    ) -> Result<usize> {
        let chunks = sum_chunks(n);
        let (x, _g1) = input(s, x, n, "sigmoid cross-entropy: logits")?;
        let (t, _g2) = input(s, t, n, "sigmoid cross-entropy: targets")?;
        let (partial_loss, _g3) = output(
            s,
            partial_loss,
            chunks,
            "sigmoid cross-entropy: partial losses",
        )?;
        let (partial_count, _g4) = output(
            s,
            partial_count,
            chunks,
            "sigmoid cross-entropy: partial counts",
        )?;
        let n = n as i64;
        let (has_ignore, ignore) = (ignore.is_some() as i32, ignore.unwrap_or(0));
        launch!(self, s, "loss_sigmoid_ce_fwd_partials_f32", Self::blocks((chunks as u32, 1, 1));
            x: cf32, t: cf32, partial_loss: mf64, partial_count: mf64, n: i64, has_ignore: i32, ignore: i32)?;
        Ok(chunks)
    }

    /// `dx = (sigmoid - t) * top_diff[0] / normalizer` (0 where ignored), all on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_sigmoid_ce_bwd(
        &self,
        s: &CudaStream,
        sig: &dyn DevicePtr<f32>,
        t: &dyn DevicePtr<f32>,
        top_diff: &dyn DevicePtr<f32>,
        valid: &dyn DevicePtr<f32>,
        dx: &mut dyn DevicePtrMut<f32>,
        outer: usize,
        inner: usize,
        ignore: Option<i32>,
        mode: i32,
    ) -> Result<()> {
        let n = outer * inner;
        if n == 0 {
            return Ok(());
        }
        let (sig, _g1) = input(s, sig, n, "sigmoid cross-entropy backward: sigmoid")?;
        let (t, _g2) = input(s, t, n, "sigmoid cross-entropy backward: targets")?;
        let (top_diff, _g3) = input(
            s,
            top_diff,
            1,
            "sigmoid cross-entropy backward: loss weight",
        )?;
        let (valid, _g4) = input(s, valid, 1, "sigmoid cross-entropy backward: valid count")?;
        let (dx, _g5) = output(s, dx, n, "sigmoid cross-entropy backward: dx")?;
        let (n_i, outer, inner) = (n as i64, outer as i64, inner as i64);
        let (has_ignore, ignore) = (ignore.is_some() as i32, ignore.unwrap_or(0));
        launch!(self, s, "loss_sigmoid_ce_bwd_f32", self.grid_for(n);
            sig: cf32, t: cf32, top_diff: cf32, valid: cf32, dx: mf32, n_i: i64, outer: i64, inner: i64,
            has_ignore: i32, ignore: i32, mode: i32)
    }

    /// Euclidean loss, stage one: `diff = a - b` and per-chunk sums of `diff^2` (`partial` holds
    /// at least [`sum_chunks`]`(n)` doubles). Returns the chunk count.
    pub fn loss_euclidean_fwd_partials(
        &self,
        s: &CudaStream,
        a: &dyn DevicePtr<f32>,
        b: &dyn DevicePtr<f32>,
        diff: &mut dyn DevicePtrMut<f32>,
        partial: &mut dyn DevicePtrMut<f64>,
        n: usize,
    ) -> Result<usize> {
        let chunks = sum_chunks(n);
        let (a, _g1) = input(s, a, n, "euclidean loss: a")?;
        let (b, _g2) = input(s, b, n, "euclidean loss: b")?;
        let (diff, _g3) = output(s, diff, n, "euclidean loss: diff")?;
        let (partial, _g4) = output(s, partial, chunks, "euclidean loss: partials")?;
        let n = n as i64;
        launch!(self, s, "loss_euclidean_fwd_partials_f32", Self::blocks((chunks as u32, 1, 1));
            a: cf32, b: cf32, diff: mf32, partial: mf64, n: i64)?;
        Ok(chunks)
    }

    /// Euclidean loss, stage two: `loss_out[0] = sum / num / 2`.
    pub fn loss_euclidean_fwd_finish(
        &self,
        s: &CudaStream,
        partial: &dyn DevicePtr<f64>,
        chunks: usize,
        loss_out: &mut dyn DevicePtrMut<f32>,
        num: f32,
    ) -> Result<()> {
        let (partial, _g1) = input(s, partial, chunks, "euclidean loss: partials")?;
        let (loss_out, _g2) = output(s, loss_out, 1, "euclidean loss: loss")?;
        let chunks = chunks as i64;
        launch!(self, s, "loss_euclidean_fwd_finish_f32", Self::blocks((1, 1, 1));
            partial: cf64, chunks: i64, loss_out: mf32, num: f32)
    }

    /// `y = ((sign * top_diff[0]) / divisor) * x` over `y.len()` values, the loss weight read on
    /// the device.
    pub fn loss_weighted_copy(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        top_diff: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        sign: f32,
        divisor: f32,
    ) -> Result<()> {
        let n = y.len();
        if n == 0 {
            return Ok(());
        }
        let (x, _g1) = input(s, x, n, "loss gradient: x")?;
        let (top_diff, _g2) = input(s, top_diff, 1, "loss gradient: loss weight")?;
        let (y, _g3) = y.device_ptr_mut(s);
        let n = n as i64;
        launch!(self, s, "loss_weighted_copy_f32", self.grid_for(n as usize);
            x: cf32, top_diff: cf32, y: mf32, n: i64, sign: f32, divisor: f32)
    }

    /// ArgMax over `rows` rows of `dim` values `axis_dist` apart (see loss.cu); `y` receives
    /// the layout of `cpu::loss::argmax_forward`.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_argmax(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        dim: usize,
        axis_dist: usize,
        top_k: usize,
        out_max_val: bool,
        has_axis: bool,
    ) -> Result<()> {
        if dim == 0 || axis_dist == 0 || top_k == 0 || top_k > dim {
            bail!("argmax: bad dims (dim {dim}, axis_dist {axis_dist}, top_k {top_k})");
        }
        let n = x.len();
        if n % (dim * axis_dist) != 0 {
            bail!("argmax: {n} values do not divide into rows of {dim} x {axis_dist}");
        }
        let rows = n / dim;
        if rows == 0 {
            return Ok(());
        }
        let per_row = if out_max_val && !has_axis {
            2 * top_k
        } else {
            top_k
        };
        let (x, _g1) = input(s, x, n, "argmax: input")?;
        let (y, _g2) = output(s, y, rows * per_row, "argmax: output")?;
        let (rows_i, dim, axis_dist) = (rows as i64, dim as i64, axis_dist as i64);
        let (top_k, out_max_val, has_axis) =
            (to_i32(top_k, "top_k")?, out_max_val as i32, has_axis as i32);
        launch!(self, s, "loss_argmax_f32", self.grid_for_warps(rows);
            x: cf32, y: mf32, rows_i: i64, dim: i64, axis_dist: i64, top_k: i32, out_max_val: i32, has_axis: i32)
    }

    // ---- gemm.cu ------------------------------------------------------------------------------

    /// `C = alpha op(A) op(B) + beta C` over contiguous row-major matrices, as
    /// `cpu::blas::sgemm`.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        &self,
        s: &CudaStream,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &dyn DevicePtr<f32>,
        b: &dyn DevicePtr<f32>,
        beta: f32,
        c: &mut dyn DevicePtrMut<f32>,
    ) -> Result<()> {
        self.sgemm_batched(
            s,
            &GemmShape::contiguous(trans_a, trans_b, m, n, k, alpha, beta),
            a,
            b,
            c,
        )
    }

    /// A strided batch of products, with the tile configuration chosen by size.
    pub fn sgemm_batched(
        &self,
        s: &CudaStream,
        shape: &GemmShape,
        a: &dyn DevicePtr<f32>,
        b: &dyn DevicePtr<f32>,
        c: &mut dyn DevicePtrMut<f32>,
    ) -> Result<()> {
        if shape.use_large_tiles(self.sm_count) {
            self.gemm_sgemm_128x128(s, shape, a, b, c)
        } else {
            self.gemm_sgemm_64x64(s, shape, a, b, c)
        }
    }

    #[allow(clippy::type_complexity)]
    fn gemm_args(
        shape: &GemmShape,
    ) -> Result<(i32, i32, i32, i32, i32, i32, i32, i32, i32, i64, i64, i64)> {
        shape.validate()?;
        Ok((
            shape.trans_a as i32,
            shape.trans_b as i32,
            to_i32(shape.m, "sgemm M")?,
            to_i32(shape.n, "sgemm N")?,
            to_i32(shape.k, "sgemm K")?,
            to_i32(shape.lda, "sgemm lda")?,
            to_i32(shape.ldb, "sgemm ldb")?,
            to_i32(shape.ldc, "sgemm ldc")?,
            to_i32(shape.batch, "sgemm batch")?,
            shape.stride_a as i64,
            shape.stride_b as i64,
            shape.stride_c as i64,
        ))
    }

    pub fn gemm_sgemm_128x128(
        &self,
        s: &CudaStream,
        shape: &GemmShape,
        a: &dyn DevicePtr<f32>,
        b: &dyn DevicePtr<f32>,
        c: &mut dyn DevicePtrMut<f32>,
    ) -> Result<()> {
        if shape.m == 0 || shape.n == 0 || shape.batch == 0 {
            return Ok(());
        }
        let (trans_a, trans_b, m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c) =
            Self::gemm_args(shape)?;
        let (na, nb, nc) = shape.needs();
        let (a, _g1) = input(s, a, na, "sgemm: A")?;
        let (b, _g2) = input(s, b, nb, "sgemm: B")?;
        let (c, _g3) = output(s, c, nc, "sgemm: C")?;
        let (alpha, beta) = (shape.alpha, shape.beta);
        let cfg = Self::blocks((
            (n as u32).div_ceil(128),
            (m as u32).div_ceil(128),
            batch as u32,
        ));
        launch!(self, s, "gemm_sgemm_128x128_f32", cfg;
            trans_a: i32, trans_b: i32, m: i32, n: i32, k: i32, alpha: f32, a: cf32, lda: i32, stride_a: i64, b: cf32,
            ldb: i32, stride_b: i64, beta: f32, c: mf32, ldc: i32, stride_c: i64)
    }

    pub fn gemm_sgemm_64x64(
        &self,
        s: &CudaStream,
        shape: &GemmShape,
        a: &dyn DevicePtr<f32>,
        b: &dyn DevicePtr<f32>,
        c: &mut dyn DevicePtrMut<f32>,
    ) -> Result<()> {
        if shape.m == 0 || shape.n == 0 || shape.batch == 0 {
            return Ok(());
        }
        let (trans_a, trans_b, m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c) =
            Self::gemm_args(shape)?;
        let (na, nb, nc) = shape.needs();
        let (a, _g1) = input(s, a, na, "sgemm: A")?;
        let (b, _g2) = input(s, b, nb, "sgemm: B")?;
        let (c, _g3) = output(s, c, nc, "sgemm: C")?;
        let (alpha, beta) = (shape.alpha, shape.beta);
        let cfg = Self::blocks((
            (n as u32).div_ceil(64),
            (m as u32).div_ceil(64),
            batch as u32,
        ));
        launch!(self, s, "gemm_sgemm_64x64_f32", cfg;
            trans_a: i32, trans_b: i32, m: i32, n: i32, k: i32, alpha: f32, a: cf32, lda: i32, stride_a: i64, b: cf32,
            ldb: i32, stride_b: i64, beta: f32, c: mf32, ldc: i32, stride_c: i64)
    }

    // ---- conv.cu ------------------------------------------------------------------------------

    fn conv_args(g: &Conv2d) -> Result<[i32; 13]> {
        Ok([
            to_i32(g.channels, "channels")?,
            to_i32(g.height, "height")?,
            to_i32(g.width, "width")?,
            to_i32(g.kernel_h, "kernel_h")?,
            to_i32(g.kernel_w, "kernel_w")?,
            to_i32(g.pad_h, "pad_h")?,
            to_i32(g.pad_w, "pad_w")?,
            to_i32(g.stride_h, "stride_h")?,
            to_i32(g.stride_w, "stride_w")?,
            to_i32(g.dilation_h, "dilation_h")?,
            to_i32(g.dilation_w, "dilation_w")?,
            to_i32(g.out_h, "out_h")?,
            to_i32(g.out_w, "out_w")?,
        ])
    }

    fn conv_spans(
        g: &Conv2d,
        images: usize,
        im_stride: usize,
        col_stride: usize,
    ) -> Result<(usize, usize)> {
        Self::image_spans(g.im_len(), g.col_len(), images, im_stride, col_stride)
    }

    /// Values the image and column buffers must hold for `images` images at these strides.
    fn image_spans(
        im_len: usize,
        col_len: usize,
        images: usize,
        im_stride: usize,
        col_stride: usize,
    ) -> Result<(usize, usize)> {
        if images > 65535 {
            bail!("im2col: {images} images exceed the grid's 65535; split the batch");
        }
        if images > 1 && (im_stride < im_len || col_stride < col_len) {
            bail!("im2col: image strides ({im_stride}, {col_stride}) are shorter than an image ({im_len}, {col_len})");
        }
        let last = images.saturating_sub(1);
        Ok((last * im_stride + im_len, last * col_stride + col_len))
    }

    /// im2col for `images` images, `im_stride` / `col_stride` values apart.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_im2col(
        &self,
        s: &CudaStream,
        im: &dyn DevicePtr<f32>,
        col: &mut dyn DevicePtrMut<f32>,
        g: &Conv2d,
        images: usize,
        im_stride: usize,
        col_stride: usize,
    ) -> Result<()> {
        let positions = g.out_h * g.out_w;
        let rows = g.channels * g.kernel_h * g.kernel_w;
        if images == 0 || positions == 0 || rows == 0 {
            return Ok(());
        }
        let (ni, nc) = Self::conv_spans(g, images, im_stride, col_stride)?;
        let [channels, h, w, kh, kw, pad_h, pad_w, sh, sw, dh, dw, oh, ow] = Self::conv_args(g)?;
        let (im, _g1) = input(s, im, ni, "im2col: image")?;
        let (col, _g2) = output(s, col, nc, "im2col: columns")?;
        let (im_stride, col_stride) = (im_stride as i64, col_stride as i64);
        let cfg = Self::blocks((
            (positions as u32).div_ceil(THREADS),
            rows.min(65535) as u32,
            images as u32,
        ));
        launch!(self, s, "conv_im2col_f32", cfg;
            im: cf32, col: mf32, channels: i32, h: i32, w: i32, kh: i32, kw: i32, pad_h: i32, pad_w: i32, sh: i32, sw: i32,
            dh: i32, dw: i32, oh: i32, ow: i32, im_stride: i64, col_stride: i64)
    }

    /// col2im (overwrites the images) for `images` images.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_col2im(
        &self,
        s: &CudaStream,
        col: &dyn DevicePtr<f32>,
        im: &mut dyn DevicePtrMut<f32>,
        g: &Conv2d,
        images: usize,
        im_stride: usize,
        col_stride: usize,
    ) -> Result<()> {
        let n = g.im_len();
        if images == 0 || n == 0 {
            return Ok(());
        }
        let (ni, nc) = Self::conv_spans(g, images, im_stride, col_stride)?;
        let [channels, h, w, kh, kw, pad_h, pad_w, sh, sw, dh, dw, oh, ow] = Self::conv_args(g)?;
        let (col, _g1) = input(s, col, nc, "col2im: columns")?;
        let (im, _g2) = output(s, im, ni, "col2im: image")?;
        let (im_stride, col_stride) = (im_stride as i64, col_stride as i64);
        let mut cfg = self.grid_for(n);
        cfg.grid_dim.2 = images as u32;
        launch!(self, s, "conv_col2im_f32", cfg;
            col: cf32, im: mf32, channels: i32, h: i32, w: i32, kh: i32, kw: i32, pad_h: i32, pad_w: i32, sh: i32, sw: i32,
            dh: i32, dw: i32, oh: i32, ow: i32, im_stride: i64, col_stride: i64)
    }

    #[allow(clippy::type_complexity)]
    fn conv_nd_args(g: &ConvNd, table: &dyn DevicePtr<i32>) -> Result<(i32, i32, i64, i64, i64)> {
        check_len(table.len(), g.table.len(), "N-D im2col: geometry table")?;
        Ok((
            g.nd() as i32,
            to_i32(g.channels, "channels")?,
            g.im_spatial as i64,
            g.col_spatial as i64,
            g.kernel_count as i64,
        ))
    }

    /// N-D im2col for `images` images; `table` holds `g.table` on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_im2col_nd(
        &self,
        s: &CudaStream,
        im: &dyn DevicePtr<f32>,
        col: &mut dyn DevicePtrMut<f32>,
        g: &ConvNd,
        table: &dyn DevicePtr<i32>,
        images: usize,
        im_stride: usize,
        col_stride: usize,
    ) -> Result<()> {
        let n = g.col_len();
        if images == 0 || n == 0 {
            return Ok(());
        }
        let (ni, nc) = Self::image_spans(g.im_len(), n, images, im_stride, col_stride)?;
        let (nd, channels, im_spatial, col_spatial, kernel_count) = Self::conv_nd_args(g, table)?;
        let (im, _g1) = input(s, im, ni, "N-D im2col: image")?;
        let (col, _g2) = output(s, col, nc, "N-D im2col: columns")?;
        let (geom, _g3) = table.device_ptr(s);
        let (im_stride, col_stride) = (im_stride as i64, col_stride as i64);
        let mut cfg = self.grid_for(n);
        cfg.grid_dim.2 = images as u32;
        launch!(self, s, "conv_im2col_nd_f32", cfg;
            im: cf32, col: mf32, geom: ci32, nd: i32, channels: i32, im_spatial: i64, col_spatial: i64,
            kernel_count: i64, im_stride: i64, col_stride: i64)
    }

    /// N-D col2im (overwrites the images) for `images` images.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_col2im_nd(
        &self,
        s: &CudaStream,
        col: &dyn DevicePtr<f32>,
        im: &mut dyn DevicePtrMut<f32>,
        g: &ConvNd,
        table: &dyn DevicePtr<i32>,
        images: usize,
        im_stride: usize,
        col_stride: usize,
    ) -> Result<()> {
        let n = g.im_len();
        if images == 0 || n == 0 {
            return Ok(());
        }
        let (ni, nc) = Self::image_spans(n, g.col_len(), images, im_stride, col_stride)?;
        let (nd, channels, im_spatial, col_spatial, kernel_count) = Self::conv_nd_args(g, table)?;
        let (col, _g1) = input(s, col, nc, "N-D col2im: columns")?;
        let (im, _g2) = output(s, im, ni, "N-D col2im: image")?;
        let (geom, _g3) = table.device_ptr(s);
        let (im_stride, col_stride) = (im_stride as i64, col_stride as i64);
        let mut cfg = self.grid_for(n);
        cfg.grid_dim.2 = images as u32;
        launch!(self, s, "conv_col2im_nd_f32", cfg;
            col: cf32, im: mf32, geom: ci32, nd: i32, channels: i32, im_spatial: i64, col_spatial: i64,
            kernel_count: i64, im_stride: i64, col_stride: i64)
    }

    /// `dw[i] += sum over z < images of partial[z * n + i]`, in image order.
    pub fn conv_sum_partials(
        &self,
        s: &CudaStream,
        partial: &dyn DevicePtr<f32>,
        dw: &mut dyn DevicePtrMut<f32>,
        n: usize,
        images: usize,
    ) -> Result<()> {
        if n == 0 || images == 0 {
            return Ok(());
        }
        let (partial, _g1) = input(s, partial, n * images, "weight gradient: partials")?;
        let (dw, _g2) = output(s, dw, n, "weight gradient: output")?;
        let (n_i, images) = (n as i64, to_i32(images, "images")?);
        launch!(self, s, "conv_sum_partials_f32", self.grid_for(n); partial: cf32, dw: mf32, n_i: i64, images: i32)
    }

    // ---- tensor.cu ----------------------------------------------------------------------------

    /// Concat forward / Slice backward: `src` (outer, src_axis, inner) into `dst` (outer,
    /// dst_axis, inner) at axis `offset`.
    #[allow(clippy::too_many_arguments)]
    pub fn tensor_axis_insert(
        &self,
        s: &CudaStream,
        src: &dyn DevicePtr<f32>,
        dst: &mut dyn DevicePtrMut<f32>,
        outer: usize,
        src_axis: usize,
        dst_axis: usize,
        offset: usize,
        inner: usize,
    ) -> Result<()> {
        if offset + src_axis > dst_axis {
            bail!("concat: a block of {src_axis} at offset {offset} does not fit an axis of {dst_axis}");
        }
        let n = outer * src_axis * inner;
        if n == 0 {
            return Ok(());
        }
        let (src, _g1) = input(s, src, n, "concat: source")?;
        let (dst, _g2) = output(s, dst, outer * dst_axis * inner, "concat: destination")?;
        let (outer, src_axis, dst_axis, offset, inner) = (
            outer as i64,
            src_axis as i64,
            dst_axis as i64,
            offset as i64,
            inner as i64,
        );
        launch!(self, s, "tensor_axis_insert_f32", self.grid_for(n);
            src: cf32, dst: mf32, outer: i64, src_axis: i64, dst_axis: i64, offset: i64, inner: i64)
    }

    /// Slice forward / Concat backward: axis positions [offset, offset + dst_axis) of `src`.
    #[allow(clippy::too_many_arguments)]
    pub fn tensor_axis_extract(
        &self,
        s: &CudaStream,
        src: &dyn DevicePtr<f32>,
        dst: &mut dyn DevicePtrMut<f32>,
        outer: usize,
        src_axis: usize,
        offset: usize,
        dst_axis: usize,
        inner: usize,
    ) -> Result<()> {
        if offset + dst_axis > src_axis {
            bail!("slice: a block of {dst_axis} at offset {offset} does not fit an axis of {src_axis}");
        }
        let n = outer * dst_axis * inner;
        if n == 0 {
            return Ok(());
        }
        let (src, _g1) = input(s, src, outer * src_axis * inner, "slice: source")?;
        let (dst, _g2) = output(s, dst, n, "slice: destination")?;
        let (outer, src_axis, offset, dst_axis, inner) = (
            outer as i64,
            src_axis as i64,
            offset as i64,
            dst_axis as i64,
            inner as i64,
        );
        launch!(self, s, "tensor_axis_extract_f32", self.grid_for(n);
            src: cf32, dst: mf32, outer: i64, src_axis: i64, offset: i64, dst_axis: i64, inner: i64)
    }

    /// Tile forward: `y` (outer, tiles, inner) from `x` (outer, inner).
    pub fn tensor_tile_fwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        outer: usize,
        inner: usize,
        tiles: usize,
    ) -> Result<()> {
        let n = outer * tiles * inner;
        if n == 0 {
            return Ok(());
        }
        let (x, _g1) = input(s, x, outer * inner, "tile: input")?;
        let (y, _g2) = output(s, y, n, "tile: output")?;
        let (outer, inner, tiles) = (outer as i64, inner as i64, tiles as i64);
        launch!(self, s, "tensor_tile_fwd_f32", self.grid_for(n);
            x: cf32, y: mf32, outer: i64, inner: i64, tiles: i64)
    }

    /// Tile backward: `dx` (outer, inner) = the sum of the `tiles` copies in `dy`, in tile order.
    pub fn tensor_tile_bwd(
        &self,
        s: &CudaStream,
        dy: &dyn DevicePtr<f32>,
        dx: &mut dyn DevicePtrMut<f32>,
        outer: usize,
        inner: usize,
        tiles: usize,
    ) -> Result<()> {
        let n = outer * inner;
        if n == 0 {
            return Ok(());
        }
        if tiles == 0 {
            bail!("tile backward: 0 tiles");
        }
        let (dy, _g1) = input(s, dy, n * tiles, "tile backward: dy")?;
        let (dx, _g2) = output(s, dx, n, "tile backward: dx")?;
        let (outer, inner, tiles) = (outer as i64, inner as i64, tiles as i64);
        launch!(self, s, "tensor_tile_bwd_f32", self.grid_for(n);
            dy: cf32, dx: mf32, outer: i64, inner: i64, tiles: i64)
    }

    pub fn tensor_fill(
        &self,
        s: &CudaStream,
        y: &mut dyn DevicePtrMut<f32>,
        value: f32,
    ) -> Result<()> {
        let n = y.len();
        if n == 0 {
            return Ok(());
        }
        let (y, _g) = y.device_ptr_mut(s);
        let n = n as i64;
        launch!(self, s, "tensor_fill_f32", self.grid_for(n as usize); y: mf32, n: i64, value: f32)
    }

    /// `y = alpha * x` (in place: Caffe's caffe_scal).
    pub fn tensor_scale(&self, s: &CudaStream, mut io: Io, alpha: f32) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "tensor_scale_f32", self.grid_for(n as usize); x: cf32, y: mf32, n: i64, alpha: f32)
    }

    // ---- lrn.cu -------------------------------------------------------------------------------

    /// `scale = k + alpha / size * window sum of x^2` (ACROSS_CHANNELS).
    #[allow(clippy::too_many_arguments)]
    pub fn lrn_across_scale(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        scale: &mut dyn DevicePtrMut<f32>,
        num: usize,
        channels: usize,
        plane: usize,
        size: usize,
        alpha: f32,
        k: f32,
    ) -> Result<()> {
        let n = num * channels * plane;
        if n == 0 {
            return Ok(());
        }
        let alpha_over_size = alpha / size as f32;
        let (x, _g1) = input(s, x, n, "lrn: x")?;
        let (scale, _g2) = output(s, scale, n, "lrn: scale")?;
        let (num, channels, plane, size) = (
            num as i64,
            to_i32(channels, "channels")?,
            plane as i64,
            to_i32(size, "local_size")?,
        );
        launch!(self, s, "lrn_across_scale_f32", self.grid_for(n);
            x: cf32, scale: mf32, num: i64, channels: i32, plane: i64, size: i32, alpha_over_size: f32, k: f32)
    }

    /// `y = scale^-beta * x`.
    pub fn lrn_across_output(
        &self,
        s: &CudaStream,
        mut io: Io,
        scale: &dyn DevicePtr<f32>,
        beta: f32,
    ) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let (scale, _g1) = input(s, scale, n, "lrn: scale")?;
        let (x, y, _g) = io.pointers(s);
        let n = n as i64;
        launch!(self, s, "lrn_across_output_f32", self.grid_for(n as usize); x: cf32, scale: cf32, y: mf32, n: i64, beta: f32)
    }

    /// `ratio = dy * y / scale` (backward's first pass).
    pub fn lrn_across_ratio(
        &self,
        s: &CudaStream,
        dy: &dyn DevicePtr<f32>,
        y: &dyn DevicePtr<f32>,
        scale: &dyn DevicePtr<f32>,
        ratio: &mut dyn DevicePtrMut<f32>,
    ) -> Result<()> {
        let n = ratio.len();
        if n == 0 {
            return Ok(());
        }
        let (dy, _g1) = input(s, dy, n, "lrn backward: dy")?;
        let (y, _g2) = input(s, y, n, "lrn backward: y")?;
        let (scale, _g3) = input(s, scale, n, "lrn backward: scale")?;
        let (ratio, _g4) = ratio.device_ptr_mut(s);
        let n = n as i64;
        launch!(self, s, "lrn_across_ratio_f32", self.grid_for(n as usize); dy: cf32, y: cf32, scale: cf32, ratio: mf32, n: i64)
    }

    /// `dx = dy * scale^-beta - (2 alpha beta / size) * x * window sum of ratio`; `d` carries dy
    /// (in) and dx (out).
    #[allow(clippy::too_many_arguments)]
    pub fn lrn_across_bwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        scale: &dyn DevicePtr<f32>,
        ratio: &dyn DevicePtr<f32>,
        mut d: Io,
        num: usize,
        channels: usize,
        plane: usize,
        size: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let n = num * channels * plane;
        if n == 0 {
            return Ok(());
        }
        check_len(d.len(), n, "lrn backward")?;
        let cache_ratio = 2.0 * alpha * beta / size as f32;
        let (x, _g1) = input(s, x, n, "lrn backward: x")?;
        let (scale, _g2) = input(s, scale, n, "lrn backward: scale")?;
        let (ratio, _g3) = input(s, ratio, n, "lrn backward: ratio")?;
        let (dy, dx, _g) = d.pointers(s);
        let (num, channels, plane, size) = (
            num as i64,
            to_i32(channels, "channels")?,
            plane as i64,
            to_i32(size, "local_size")?,
        );
        launch!(self, s, "lrn_across_bwd_f32", self.grid_for(n);
            x: cf32, scale: cf32, ratio: cf32, dy: cf32, dx: mf32, num: i64, channels: i32, plane: i64, size: i32,
            beta: f32, cache_ratio: f32)
    }

    fn within_args(planes: usize, h: usize, w: usize, size: usize) -> Result<(i64, i32, i32, i32)> {
        Ok((
            planes as i64,
            to_i32(h, "height")?,
            to_i32(w, "width")?,
            to_i32(size, "local_size")?,
        ))
    }

    /// WITHIN_CHANNEL forward: `pooled`, `power` (kept for backward) and `y`, over `planes`
    /// planes of `h x w`.
    #[allow(clippy::too_many_arguments)]
    pub fn lrn_within_fwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        pooled: &mut dyn DevicePtrMut<f32>,
        power: &mut dyn DevicePtrMut<f32>,
        y: &mut dyn DevicePtrMut<f32>,
        planes: usize,
        h: usize,
        w: usize,
        size: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let n = planes * h * w;
        if n == 0 {
            return Ok(());
        }
        let (x, _g1) = input(s, x, n, "lrn: x")?;
        let (pooled, _g2) = output(s, pooled, n, "lrn: pooled squares")?;
        let (power, _g3) = output(s, power, n, "lrn: power")?;
        let (y, _g4) = output(s, y, n, "lrn: y")?;
        let (planes, h, w, size) = Self::within_args(planes, h, w, size)?;
        launch!(self, s, "lrn_within_fwd_f32", self.grid_for(n);
            x: cf32, pooled: mf32, power: mf32, y: mf32, planes: i64, h: i32, w: i32, size: i32, alpha: f32, beta: f32)
    }

    /// WITHIN_CHANNEL backward, first pass: the gradient reaching the pooled squares.
    #[allow(clippy::too_many_arguments)]
    pub fn lrn_within_dpool(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        pooled: &dyn DevicePtr<f32>,
        power: &dyn DevicePtr<f32>,
        dy: &dyn DevicePtr<f32>,
        dpool: &mut dyn DevicePtrMut<f32>,
        n: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let diff_scale = -beta * alpha;
        let (x, _g1) = input(s, x, n, "lrn backward: x")?;
        let (pooled, _g2) = input(s, pooled, n, "lrn backward: pooled squares")?;
        let (power, _g3) = input(s, power, n, "lrn backward: power")?;
        let (dy, _g4) = input(s, dy, n, "lrn backward: dy")?;
        let (dpool, _g5) = output(s, dpool, n, "lrn backward: pooled gradient")?;
        let n_i = n as i64;
        launch!(self, s, "lrn_within_dpool_f32", self.grid_for(n);
            x: cf32, pooled: cf32, power: cf32, dy: cf32, dpool: mf32, n_i: i64, alpha: f32, diff_scale: f32)
    }

    /// WITHIN_CHANNEL backward, second pass: `dx` (must not alias `dpool` or `x`).
    #[allow(clippy::too_many_arguments)]
    pub fn lrn_within_bwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        power: &dyn DevicePtr<f32>,
        dy: &dyn DevicePtr<f32>,
        dpool: &dyn DevicePtr<f32>,
        dx: &mut dyn DevicePtrMut<f32>,
        planes: usize,
        h: usize,
        w: usize,
        size: usize,
    ) -> Result<()> {
        let n = planes * h * w;
        if n == 0 {
            return Ok(());
        }
        let (x, _g1) = input(s, x, n, "lrn backward: x")?;
        let (power, _g2) = input(s, power, n, "lrn backward: power")?;
        let (dy, _g3) = input(s, dy, n, "lrn backward: dy")?;
        let (dpool, _g4) = input(s, dpool, n, "lrn backward: pooled gradient")?;
        let (dx, _g5) = output(s, dx, n, "lrn backward: dx")?;
        let (planes, h, w, size) = Self::within_args(planes, h, w, size)?;
        launch!(self, s, "lrn_within_bwd_f32", self.grid_for(n);
            x: cf32, power: cf32, dy: cf32, dpool: cf32, dx: mf32, planes: i64, h: i32, w: i32, size: i32)
    }

    // ---- solver.cu ----------------------------------------------------------------------------

    fn update_ptrs<'a>(
        s: &'a CudaStream,
        w: &'a mut dyn DevicePtrMut<f32>,
        diff: &'a mut dyn DevicePtrMut<f32>,
        h: &'a mut dyn DevicePtrMut<f32>,
    ) -> Result<(usize, u64, u64, u64, [SyncOnDrop<'a>; 3])> {
        let n = w.len();
        check_len(diff.len(), n, "solver update: diff")?;
        check_len(h.len(), n, "solver update: history")?;
        let (wp, g1) = w.device_ptr_mut(s);
        let (dp, g2) = diff.device_ptr_mut(s);
        let (hp, g3) = h.device_ptr_mut(s);
        Ok((n, wp, dp, hp, [g1, g2, g3]))
    }

    /// SGD with momentum (fused normalize, regularize, update, apply).
    pub fn solver_sgd(
        &self,
        s: &CudaStream,
        w: &mut dyn DevicePtrMut<f32>,
        diff: &mut dyn DevicePtrMut<f32>,
        h: &mut dyn DevicePtrMut<f32>,
        u: &Update,
        momentum: f32,
    ) -> Result<()> {
        let (n, w, diff, h, _g) = Self::update_ptrs(s, w, diff, h)?;
        if n == 0 {
            return Ok(());
        }
        let (local_rate, local_decay, l1, iter_size, apply) = u.args();
        let n = n as i64;
        launch!(self, s, "solver_sgd_f32", self.grid_for(n as usize);
            w: mf32, diff: mf32, h: mf32, n: i64, local_rate: f32, local_decay: f32, l1: i32, iter_size: i32, apply: i32,
            momentum: f32)
    }

    pub fn solver_nesterov(
        &self,
        s: &CudaStream,
        w: &mut dyn DevicePtrMut<f32>,
        diff: &mut dyn DevicePtrMut<f32>,
        h: &mut dyn DevicePtrMut<f32>,
        u: &Update,
        momentum: f32,
    ) -> Result<()> {
        let (n, w, diff, h, _g) = Self::update_ptrs(s, w, diff, h)?;
        if n == 0 {
            return Ok(());
        }
        let (local_rate, local_decay, l1, iter_size, apply) = u.args();
        let n = n as i64;
        launch!(self, s, "solver_nesterov_f32", self.grid_for(n as usize);
            w: mf32, diff: mf32, h: mf32, n: i64, local_rate: f32, local_decay: f32, l1: i32, iter_size: i32, apply: i32,
            momentum: f32)
    }

    pub fn solver_adagrad(
        &self,
        s: &CudaStream,
        w: &mut dyn DevicePtrMut<f32>,
        diff: &mut dyn DevicePtrMut<f32>,
        h: &mut dyn DevicePtrMut<f32>,
        u: &Update,
        delta: f32,
    ) -> Result<()> {
        let (n, w, diff, h, _g) = Self::update_ptrs(s, w, diff, h)?;
        if n == 0 {
            return Ok(());
        }
        let (local_rate, local_decay, l1, iter_size, apply) = u.args();
        let n = n as i64;
        launch!(self, s, "solver_adagrad_f32", self.grid_for(n as usize);
            w: mf32, diff: mf32, h: mf32, n: i64, local_rate: f32, local_decay: f32, l1: i32, iter_size: i32, apply: i32,
            delta: f32)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn solver_rmsprop(
        &self,
        s: &CudaStream,
        w: &mut dyn DevicePtrMut<f32>,
        diff: &mut dyn DevicePtrMut<f32>,
        h: &mut dyn DevicePtrMut<f32>,
        u: &Update,
        rms_decay: f32,
        delta: f32,
    ) -> Result<()> {
        let (n, w, diff, h, _g) = Self::update_ptrs(s, w, diff, h)?;
        if n == 0 {
            return Ok(());
        }
        let (local_rate, local_decay, l1, iter_size, apply) = u.args();
        let n = n as i64;
        launch!(self, s, "solver_rmsprop_f32", self.grid_for(n as usize);
            w: mf32, diff: mf32, h: mf32, n: i64, local_rate: f32, local_decay: f32, l1: i32, iter_size: i32, apply: i32,
            rms_decay: f32, delta: f32)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn solver_adadelta(
        &self,
        s: &CudaStream,
        w: &mut dyn DevicePtrMut<f32>,
        diff: &mut dyn DevicePtrMut<f32>,
        h1: &mut dyn DevicePtrMut<f32>,
        h2: &mut dyn DevicePtrMut<f32>,
        u: &Update,
        momentum: f32,
        delta: f32,
    ) -> Result<()> {
        check_len(h2.len(), w.len(), "solver update: second history")?;
        let (h2, _g2) = h2.device_ptr_mut(s);
        let (n, w, diff, h1, _g) = Self::update_ptrs(s, w, diff, h1)?;
        if n == 0 {
            return Ok(());
        }
        let (local_rate, local_decay, l1, iter_size, apply) = u.args();
        let n = n as i64;
        launch!(self, s, "solver_adadelta_f32", self.grid_for(n as usize);
            w: mf32, diff: mf32, h1: mf32, h2: mf32, n: i64, local_rate: f32, local_decay: f32, l1: i32, iter_size: i32,
            apply: i32, momentum: f32, delta: f32)
    }

    /// Adam; `iter` is the iteration being applied (t = iter + 1), as in `solver::update::Hyper`.
    #[allow(clippy::too_many_arguments)]
    pub fn solver_adam(
        &self,
        s: &CudaStream,
        w: &mut dyn DevicePtrMut<f32>,
        diff: &mut dyn DevicePtrMut<f32>,
        m: &mut dyn DevicePtrMut<f32>,
        v: &mut dyn DevicePtrMut<f32>,
        u: &Update,
        beta1: f32,
        beta2: f32,
        delta: f32,
        iter: i32,
    ) -> Result<()> {
        check_len(v.len(), w.len(), "solver update: second moment")?;
        let (v, _g2) = v.device_ptr_mut(s);
        let (n, w, diff, m, _g) = Self::update_ptrs(s, w, diff, m)?;
        if n == 0 {
            return Ok(());
        }
        let (local_rate, local_decay, l1, iter_size, apply) = u.args();
        let scale = adam_scale(local_rate, beta1, beta2, iter);
        let n = n as i64;
        launch!(self, s, "solver_adam_f32", self.grid_for(n as usize);
            w: mf32, diff: mf32, m: mf32, v: mf32, n: i64, local_decay: f32, l1: i32, iter_size: i32, apply: i32, beta1: f32,
            beta2: f32, delta: f32, scale: f32)
    }

    /// Stage one of the gradient's squared norm: writes [`sum_chunks`]`(x.len())` partials at
    /// the start of `partial` and returns that count. Lay the blobs' partials one after another
    /// (views at increasing offsets), then finish over all of them.
    pub fn solver_sumsq_partials(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        partial: &mut dyn DevicePtrMut<f64>,
    ) -> Result<usize> {
        let n = x.len();
        let chunks = sum_chunks(n);
        let (x, _g1) = x.device_ptr(s);
        let (partial, _g2) = output(s, partial, chunks, "sum of squares: partials")?;
        let n = n as i64;
        launch!(self, s, "solver_sumsq_partials_f32", Self::blocks((chunks as u32, 1, 1)); x: cf32, n: i64, partial: mf64)?;
        Ok(chunks)
    }

    /// Stage two: `out[0]` = the sum of the first `count` partials, in order.
    pub fn solver_sumsq_finish(
        &self,
        s: &CudaStream,
        partial: &dyn DevicePtr<f64>,
        count: usize,
        out: &mut dyn DevicePtrMut<f32>,
    ) -> Result<()> {
        let (partial, _g1) = input(s, partial, count, "sum of squares: partials")?;
        let (out, _g2) = output(s, out, 1, "sum of squares: output")?;
        let count = count as i64;
        launch!(self, s, "solver_sumsq_finish_f32", Self::blocks((1, 1, 1)); partial: cf64, count: i64, out: mf32)
    }

    /// Gradient clipping: `diff *= clip / norm` when `norm = sqrt(sumsq[0]) > clip` (the
    /// decision is taken on the device, from [`Kernels::solver_sumsq_finish`]'s output).
    pub fn solver_clip_scale(
        &self,
        s: &CudaStream,
        diff: &mut dyn DevicePtrMut<f32>,
        sumsq: &dyn DevicePtr<f32>,
        clip: f32,
    ) -> Result<()> {
        let n = diff.len();
        if n == 0 {
            return Ok(());
        }
        let (sumsq, _g1) = input(s, sumsq, 1, "gradient clipping: sum of squares")?;
        let (diff, _g2) = diff.device_ptr_mut(s);
        let n = n as i64;
        launch!(self, s, "solver_clip_scale_f32", self.grid_for(n as usize); diff: mf32, n: i64, sumsq: cf32, clip: f32)
    }

    // ---- reduction.cu -------------------------------------------------------------------------

    /// Reduction forward: `y[r] = coeff * reduce(x[r, ..])` for `num` rows of `dim` values (both
    /// stages of reduction.cu); `partial` holds at least [`reduction_partials_len`]`(num, dim)`
    /// doubles. `op`: 0 sum, 1 sum of |x|, 2 sum of squares.
    #[allow(clippy::too_many_arguments)]
    pub fn reduction_forward(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        partial: &mut dyn DevicePtrMut<f64>,
        y: &mut dyn DevicePtrMut<f32>,
        num: usize,
        dim: usize,
        op: i32,
        coeff: f32,
    ) -> Result<()> {
        if num == 0 {
            return Ok(());
        }
        let chunks = sum_chunks(dim);
        let pairs = reduction_partials_len(num, dim);
        let (x, _g1) = input(s, x, num * dim, "reduction: input")?;
        let (partial, _g2) = output(s, partial, pairs, "reduction: partials")?;
        let (y, _g3) = output(s, y, num, "reduction: output")?;
        let (num_i, dim, chunks) = (num as i64, dim as i64, chunks as i64);
        let blocks = pairs.clamp(1, self.sm_count as usize * 32) as u32;
        launch!(self, s, "reduction_partials_f32", Self::blocks((blocks, 1, 1));
            x: cf32, partial: mf64, num_i: i64, dim: i64, chunks: i64, op: i32)?;
        launch!(self, s, "reduction_finish_f32", self.grid_for(num);
            partial: cf64, y: mf32, num_i: i64, chunks: i64, coeff: f32)
    }

    /// Reduction backward: `dx[r, k]` from `dy[r]` (and `x` for |x| and squares).
    #[allow(clippy::too_many_arguments)]
    pub fn reduction_bwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        dy: &dyn DevicePtr<f32>,
        dx: &mut dyn DevicePtrMut<f32>,
        num: usize,
        dim: usize,
        op: i32,
        coeff: f32,
    ) -> Result<()> {
        let n = num * dim;
        if n == 0 {
            return Ok(());
        }
        let (x, _g1) = input(s, x, n, "reduction backward: x")?;
        let (dy, _g2) = input(s, dy, num, "reduction backward: dy")?;
        let (dx, _g3) = output(s, dx, n, "reduction backward: dx")?;
        let (num, dim) = (num as i64, dim as i64);
        launch!(self, s, "reduction_bwd_f32", self.grid_for(n);
            x: cf32, dy: cf32, dx: mf32, num: i64, dim: i64, op: i32, coeff: f32)
    }

    // ---- mvn.cu -------------------------------------------------------------------------------

    /// Grid for a block-per-row kernel over `rows` rows (grid-stride beyond).
    fn grid_for_rows(&self, rows: usize) -> LaunchConfig {
        Self::blocks((rows.clamp(1, self.sm_count as usize * 32) as u32, 1, 1))
    }

    /// MVN forward over `rows` rows of `dim`; with `normalize_variance`, `std` receives each
    /// row's sqrt(var) + eps.
    #[allow(clippy::too_many_arguments)]
    pub fn mvn_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        std: &mut dyn DevicePtrMut<f32>,
        rows: usize,
        dim: usize,
        normalize_variance: bool,
        eps: f32,
    ) -> Result<()> {
        let n = rows * dim;
        if n == 0 {
            return Ok(());
        }
        check_len(io.len(), n, "mvn forward")?;
        let (std, _g1) = output(s, std, rows, "mvn: std")?;
        let (x, y, _g) = io.pointers(s);
        let (rows_i, dim, nv) = (rows as i64, dim as i64, normalize_variance as i32);
        launch!(self, s, "mvn_fwd_f32", self.grid_for_rows(rows);
            x: cf32, y: mf32, std: mf32, rows_i: i64, dim: i64, nv: i32, eps: f32)
    }

    /// MVN backward; `d` carries dy (in) and dx (out).
    #[allow(clippy::too_many_arguments)]
    pub fn mvn_bwd(
        &self,
        s: &CudaStream,
        y: &dyn DevicePtr<f32>,
        mut d: Io,
        std: &dyn DevicePtr<f32>,
        rows: usize,
        dim: usize,
        normalize_variance: bool,
    ) -> Result<()> {
        let n = rows * dim;
        if n == 0 {
            return Ok(());
        }
        check_len(d.len(), n, "mvn backward")?;
        let inv_dim = 1.0 / dim as f32;
        let (y, _g1) = input(s, y, n, "mvn backward: y")?;
        let (std, _g2) = opt_input(
            s,
            normalize_variance.then_some(std),
            rows,
            "mvn backward: std",
        )?;
        let (dy, dx, _g) = d.pointers(s);
        let (rows_i, dim, nv) = (rows as i64, dim as i64, normalize_variance as i32);
        launch!(self, s, "mvn_bwd_f32", self.grid_for_rows(rows);
            y: cf32, dy: cf32, dx: mf32, std: cf32, rows_i: i64, dim: i64, nv: i32, inv_dim: f32)
    }

    // ---- prelu.cu -----------------------------------------------------------------------------

    /// `y = max(x, 0) + a * min(x, 0)` over (num, channels, dim); `slope` holds one value when
    /// `shared`, else `channels`.
    pub fn prelu_fwd(
        &self,
        s: &CudaStream,
        mut io: Io,
        slope: &dyn DevicePtr<f32>,
        channels: usize,
        dim: usize,
        shared: bool,
    ) -> Result<()> {
        let n = io.len();
        if n == 0 {
            return Ok(());
        }
        let slopes = if shared { 1 } else { channels };
        let (slope, _g1) = input(s, slope, slopes, "prelu: slope")?;
        let (x, y, _g) = io.pointers(s);
        let (n_i, channels, dim, shared) = (
            n as i64,
            channels.max(1) as i64,
            dim.max(1) as i64,
            shared as i32,
        );
        launch!(self, s, "prelu_fwd_f32", self.grid_for(n);
            x: cf32, slope: cf32, y: mf32, n_i: i64, channels: i64, dim: i64, shared: i32)
    }

    /// `dx = x > 0 ? dy : dy * a`; `d` carries dy (in) and dx (out).
    #[allow(clippy::too_many_arguments)]
    pub fn prelu_bwd(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        mut d: Io,
        slope: &dyn DevicePtr<f32>,
        channels: usize,
        dim: usize,
        shared: bool,
    ) -> Result<()> {
        let n = d.len();
        if n == 0 {
            return Ok(());
        }
        let slopes = if shared { 1 } else { channels };
        let (x, _g1) = input(s, x, n, "prelu backward: x")?;
        let (slope, _g2) = input(s, slope, slopes, "prelu backward: slope")?;
        let (dy, dx, _g) = d.pointers(s);
        let (n_i, channels, dim, shared) = (
            n as i64,
            channels.max(1) as i64,
            dim.max(1) as i64,
            shared as i32,
        );
        launch!(self, s, "prelu_bwd_f32", self.grid_for(n);
            x: cf32, dy: cf32, slope: cf32, dx: mf32, n_i: i64, channels: i64, dim: i64, shared: i32)
    }

    /// Stage one of the slope gradient (per-channel partials, [`channel_partials_len`] doubles);
    /// returns the chunk count. Finish with [`Kernels::scale_grad_finish`] (per channel) or
    /// [`Kernels::prelu_slope_finish_shared`].
    #[allow(clippy::too_many_arguments)]
    pub fn prelu_slope_partials(
        &self,
        s: &CudaStream,
        x: &dyn DevicePtr<f32>,
        dy: &dyn DevicePtr<f32>,
        partial: &mut dyn DevicePtrMut<f64>,
        num: usize,
        channels: usize,
        dim: usize,
    ) -> Result<usize> {
        let n = num * channels * dim;
        let chunks = channel_chunks(num, dim);
        if n == 0 {
            return Ok(chunks);
        }
        let (x, _g1) = input(s, x, n, "prelu slope gradient: x")?;
        let (dy, _g2) = input(s, dy, n, "prelu slope gradient: dy")?;
        let (partial, _g3) = output(
            s,
            partial,
            channels * chunks,
            "prelu slope gradient: partials",
        )?;
        let cfg = Self::blocks((channels as u32, chunks as u32, 1));
        let (num, channels, dim) = (num as i64, channels as i64, dim as i64);
        launch!(self, s, "prelu_slope_partials_f32", cfg; x: cf32, dy: cf32, partial: mf64, num: i64, channels: i64, dim: i64)?;
        Ok(chunks)
    }

    /// A shared slope's gradient: `g[0] += sum of the first count partials`.
    pub fn prelu_slope_finish_shared(
        &self,
        s: &CudaStream,
        partial: &dyn DevicePtr<f64>,
        g: &mut dyn DevicePtrMut<f32>,
        count: usize,
    ) -> Result<()> {
        let (partial, _g1) = input(s, partial, count, "prelu slope gradient: partials")?;
        let (g, _g2) = output(s, g, 1, "prelu slope gradient: output")?;
        let count = count as i64;
        launch!(self, s, "prelu_slope_finish_shared_f32", Self::blocks((1, 1, 1)); partial: cf64, g: mf32, count: i64)
    }

    // ---- embed.cu -----------------------------------------------------------------------------

    /// The first of `m` indices that is not an integer in [0, k), if any. Reads one value back
    /// (synchronises the stream): call it where the CPU layer checks its indices.
    pub fn embed_find_bad_index(
        &self,
        s: &Arc<CudaStream>,
        idx: &dyn DevicePtr<f32>,
        m: usize,
        k: usize,
        scratch: &mut CudaSlice<u64>,
    ) -> Result<Option<usize>> {
        if m == 0 {
            return Ok(None);
        }
        check_len(scratch.len(), 1, "index check: scratch")?;
        s.memcpy_htod(&[u64::MAX][..], scratch)
            .context("index check: resetting the scratch value")?;
        {
            let (idx, _g1) = input(s, idx, m, "index check: indices")?;
            let (first_bad, _g2) = scratch.device_ptr_mut(s);
            let (m_i, k) = (m as i64, k as i64);
            let r: Result<()> = launch!(self, s, "embed_find_bad_index_f32", self.grid_for(m);
                idx: cf32, m_i: i64, k: i64, first_bad: mu64);
            r?;
        }
        let mut host = [0u64; 1];
        s.memcpy_dtoh(&*scratch, &mut host[..])
            .context("index check: reading the result")?;
        s.synchronize().context("index check: synchronising")?;
        Ok(if host[0] == u64::MAX {
            None
        } else {
            Some(host[0] as usize)
        })
    }

    /// `y[i, :] = w[idx[i], :] (+ bias)` for m indices into a (k, n) table.
    #[allow(clippy::too_many_arguments)]
    pub fn embed_fwd(
        &self,
        s: &CudaStream,
        idx: &dyn DevicePtr<f32>,
        w: &dyn DevicePtr<f32>,
        bias: Option<&dyn DevicePtr<f32>>,
        y: &mut dyn DevicePtrMut<f32>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        if m * n == 0 {
            return Ok(());
        }
        let (idx, _g1) = input(s, idx, m, "embed: indices")?;
        let (w, _g2) = input(s, w, k * n, "embed: weights")?;
        let (bias, _g3) = opt_input(s, bias, n, "embed: bias")?;
        let (y, _g4) = output(s, y, m * n, "embed: y")?;
        let (m_i, k, n_i) = (m as i64, k as i64, n as i64);
        launch!(self, s, "embed_fwd_f32", self.grid_for(m * n);
            idx: cf32, w: cf32, bias: cf32, y: mf32, m_i: i64, k: i64, n_i: i64)
    }

    /// Where each table row is first used (see embed.cu); `first` (k ints) must be zeroed.
    pub fn embed_first_use(
        &self,
        s: &CudaStream,
        idx: &dyn DevicePtr<f32>,
        first: &mut dyn DevicePtrMut<i32>,
        m: usize,
        k: usize,
    ) -> Result<()> {
        if m == 0 || k == 0 {
            return Ok(());
        }
        to_i32(m, "embed: indices per batch")?;
        let (idx, _g1) = input(s, idx, m, "embed backward: indices")?;
        let (first, _g2) = output(s, first, k, "embed backward: first uses")?;
        let (m_i, k_i) = (m as i64, k as i64);
        launch!(self, s, "embed_first_use_f32", self.grid_for(m); idx: cf32, first: mi32, m_i: i64, k_i: i64)
    }

    /// `dw[idx[i], :] += dy[i, :]`, in index order; `first` from [`Kernels::embed_first_use`].
    #[allow(clippy::too_many_arguments)]
    pub fn embed_bwd_weights(
        &self,
        s: &CudaStream,
        idx: &dyn DevicePtr<f32>,
        first: &dyn DevicePtr<i32>,
        dy: &dyn DevicePtr<f32>,
        dw: &mut dyn DevicePtrMut<f32>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        if m * n == 0 || k == 0 {
            return Ok(());
        }
        let (idx, _g1) = input(s, idx, m, "embed backward: indices")?;
        let (first, _g2) = input(s, first, k, "embed backward: first uses")?;
        let (dy, _g3) = input(s, dy, m * n, "embed backward: dy")?;
        let (dw, _g4) = output(s, dw, k * n, "embed backward: weight gradient")?;
        let (m_i, k_i, n_i) = (m as i64, k as i64, n as i64);
        launch!(self, s, "embed_bwd_weights_f32", self.grid_for(k * n);
            idx: cf32, first: ci32, dy: cf32, dw: mf32, m_i: i64, k_i: i64, n_i: i64)
    }
}

/// What a per-channel sum adds up (see batchnorm.cu's partials kernel).
pub enum ChannelTerm<'a> {
    /// sum of a
    Sum(&'a dyn DevicePtr<f32>),
    /// sum of `(a - mean[c])^2`
    SquaredDeviation(&'a dyn DevicePtr<f32>, &'a dyn DevicePtr<f32>),
    /// sum of a * b
    Product(&'a dyn DevicePtr<f32>, &'a dyn DevicePtr<f32>),
}

/// The per-blob part of a solver update (see solver.cu).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    /// rate * lr_mult
    pub local_rate: f32,
    /// weight_decay * decay_mult
    pub local_decay: f32,
    /// L1 regularization (else L2)
    pub l1: bool,
    pub iter_size: i32,
    /// Whether to apply the step to the weights (see solver.cu).
    pub apply: bool,
}

impl Update {
    fn args(&self) -> (f32, f32, i32, i32, i32) {
        (
            self.local_rate,
            self.local_decay,
            self.l1 as i32,
            self.iter_size,
            self.apply as i32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C parameter types of every entry point, from the sources, as launch! type tokens.
    fn kernel_signatures() -> HashMap<String, Vec<String>> {
        let mut out = HashMap::new();
        for f in compile::KERNEL_FILES {
            let text = compile::strip_comments(f.source);
            for name in compile::entry_points(f.source) {
                let start = text
                    .find(&format!("{name}("))
                    .unwrap_or_else(|| panic!("{name} not found"))
                    + name.len()
                    + 1;
                let end = start + text[start..].find(')').unwrap();
                let params: Vec<String> = text[start..end]
                    .split(',')
                    .map(|p| {
                        let p = p.split_whitespace().collect::<Vec<_>>().join(" ");
                        let ty = p
                            .rsplit_once(' ')
                            .map(|(t, _)| t.to_string())
                            .unwrap_or_default();
                        let ptr = p.contains('*');
                        let ty = ty.replace('*', "").trim().to_string();
                        match (ty.as_str(), ptr) {
                            ("const float", true) => "cf32",
                            ("float", true) => "mf32",
                            ("const int", true) => "ci32",
                            ("int", true) => "mi32",
                            ("const double", true) => "cf64",
                            ("double", true) => "mf64",
                            ("u64", true) => "mu64",
                            ("i64", false) => "i64",
                            ("int", false) => "i32",
                            ("u32", false) => "u32",
                            ("u64", false) => "u64",
                            ("float", false) => "f32",
                            ("double", false) => "f64",
                            other => panic!("{name}: unmapped parameter type {other:?} in '{p}'"),
                        }
                        .to_string()
                    })
                    .collect();
                out.insert(name, params);
            }
        }
        out
    }

    /// Every `launch!(..., "name", cfg; a: t, b: t)` in this file: (name, type tokens).
    fn launch_sites() -> Vec<(String, Vec<String>)> {
        let src = include_str!("kernels.rs");
        let body = &src[..src.find("#[cfg(test)]").unwrap()];
        let mut out = Vec::new();
        let mut rest = body;
        while let Some(pos) = rest.find("launch!(self, s, \"") {
            rest = &rest[pos + "launch!(self, s, \"".len()..];
            let name = rest[..rest.find('"').unwrap()].to_string();
            let semi = rest.find(';').unwrap();
            let close = rest[semi..].find(')').unwrap() + semi;
            let list = &rest[semi + 1..close];
            let types = list
                .split(',')
                .map(|a| a.trim())
                .filter(|a| !a.is_empty())
                .map(|a| a.split(':').nth(1).expect("name: type").trim().to_string())
                .collect();
            out.push((name, types));
            rest = &rest[close..];
        }
        out
    }

    #[test]
    fn launch_lists_match_kernel_signatures() {
        let sigs = kernel_signatures();
        let sites = launch_sites();
        assert!(
            sites.len() >= sigs.len(),
            "{} launch sites for {} kernels",
            sites.len(),
            sigs.len()
        );
        for (name, types) in &sites {
            let sig = sigs
                .get(name)
                .unwrap_or_else(|| panic!("launch of '{name}', which no kernel file defines"));
            assert_eq!(
                types, sig,
                "argument list of '{name}' differs from its C signature"
            );
        }
        for name in sigs.keys() {
            assert!(
                sites.iter().any(|(n, _)| n == name),
                "kernel '{name}' has no wrapper"
            );
        }
    }

    #[test]
    fn philox_known_answers() {
        // The Random123 known-answer vectors for philox4x32_10.
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn dropout_masks_keep_the_right_fraction_and_differ_per_draw() {
        let n = 100_003;
        let t = dropout_threshold(0.3);
        let a = dropout_mask_host(42, 0, n, t);
        let kept = a.iter().filter(|&&m| m == 1.0).count() as f64 / n as f64;
        assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
        let b = dropout_mask_host(42, 1, n, t);
        assert_ne!(a, b);
        assert_eq!(a, dropout_mask_host(42, 0, n, t));
        assert_eq!(dropout_threshold(0.5), 1 << 31);
        assert_eq!(dropout_threshold(0.0), 0);
    }

    #[test]
    fn partitions_depend_on_the_shape_only() {
        assert_eq!(channel_chunks(1, 1), 1);
        assert_eq!(
            channel_chunks(32, 56 * 56),
            (32 * 56 * 56usize).div_ceil(CHUNK_ELEMS)
        );
        assert_eq!(channel_chunks(256, 112 * 112), MAX_CHANNEL_CHUNKS);
        assert_eq!(channel_partials_len(64, 2, 2048), 64);
        assert_eq!(sum_chunks(0), 1);
        assert_eq!(sum_chunks(CHUNK_ELEMS + 1), 2);
        assert_eq!(sum_chunks(usize::MAX / 2), MAX_SUM_CHUNKS);
    }

    #[test]
    fn power_modes_follow_the_cpu_cases() {
        assert_eq!(power_modes(0.0, 2.0, 3.0), (0, 1.0, 0));
        assert_eq!(power_modes(2.0, 0.0, 3.0), (0, 9.0, 0));
        assert_eq!(power_modes(1.0, 2.0, 3.0).2, 0);
        assert_eq!(power_modes(2.0, 3.0, 1.0), (1, 0.0, 1));
        assert_eq!(power_modes(0.5, 1.0, 0.0).2, 2);
        assert_eq!(power_modes(0.5, 1.0, 1.0).2, 3);
    }

    #[test]
    fn adam_scale_matches_the_cpu_rule() {
        // update.rs's first Adam step moves each weight by lr * sign(g).
        let s = adam_scale(0.01, 0.9, 0.999, 0);
        let (b1, b2) = (0.9f32 as f64, 0.999f32 as f64);
        let want = 0.01 * ((1.0 - b2).sqrt() / (1.0 - b1)) as f32;
        assert_eq!(s, want);
    }

    #[test]
    fn gemm_shapes() {
        let g = GemmShape::contiguous(false, true, 5, 7, 3, 1.0, 0.0);
        assert_eq!((g.lda, g.ldb, g.ldc), (3, 3, 7));
        assert_eq!(g.needs(), (15, 21, 35));
        let mut b = g;
        b.batch = 4;
        b.stride_a = 15;
        b.stride_b = 0;
        b.stride_c = 40;
        assert_eq!(b.needs(), (60, 21, 155));
        assert!(b.validate().is_ok());
        b.ldc = 6;
        assert!(b.validate().is_err());
        let big = GemmShape::contiguous(false, false, 4096, 4096, 4096, 1.0, 0.0);
        assert!(big.use_large_tiles(132));
        assert!(
            !GemmShape::contiguous(false, false, 64, 1000, 4096, 1.0, 0.0).use_large_tiles(132)
        );
    }

    #[test]
    fn conv_geometry_from_the_cpu_one() {
        let g = ConvGeom {
            im_channels: 3,
            col_channels: 8,
            group: 1,
            im_shape: vec![7, 6],
            col_shape: vec![4, 3],
            kernel: vec![3, 2],
            pad: vec![1, 0],
            stride: vec![2, 2],
            dilation: vec![1, 1],
            force_nd: false,
        };
        let c = Conv2d::from_geom(&g).unwrap();
        assert_eq!(c.im_len(), 3 * 7 * 6);
        assert_eq!(c.col_len(), g.col_buffer_len());
        assert!(Conv2d::from_geom(&ConvGeom {
            kernel: vec![3],
            ..g
        })
        .is_err());
    }
}
