//! Finding a GPU without panicking, and describing it.
//!
//! cudarc loads libcuda and libnvrtc when first used and panics when they are missing, so
//! everything here checks `is_culib_present()` first and turns each way of not having a GPU
//! into a [`CudaError`] that says which piece is missing: the driver, the device, or NVRTC.

use std::sync::Arc;

use cudarc::driver::sys::CUdevice_attribute as A;
use cudarc::driver::{result as dr, sys as ds, CudaContext, DriverError};

use super::compile;

/// Why the GPU backend cannot run, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(
        "no CUDA driver found: libcuda.so could not be loaded (install the NVIDIA driver to use a GPU; \
         without one crema runs on the CPU)"
    )]
    NoDriver,
    #[error("the CUDA driver found no GPU on this machine")]
    NoDevices,
    #[error("no CUDA device {requested}: the driver sees {count} device(s), numbered from 0")]
    NoSuchDevice { requested: usize, count: usize },
    #[error(
        "NVRTC not found: libnvrtc.so.13 could not be loaded (crema compiles its kernels with NVIDIA's \
         run-time compiler; install it with scripts/install-nvrtc.sh and set CREMA_NVRTC_LIB_DIR, or \
         LD_LIBRARY_PATH, to the directory it prints)"
    )]
    NoNvrtc,
    #[error("CUDA driver error while {context}: {error}")]
    Driver { context: String, error: DriverError },
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    #[error("{file}: compilation for {arch} failed; NVRTC's log:\n{log}")]
    Compile {
        file: String,
        arch: String,
        log: String,
    },
}

fn driver(context: &str) -> impl FnOnce(DriverError) -> CudaError + '_ {
    move |error| CudaError::Driver {
        context: context.to_string(),
        error,
    }
}

/// Whether libcuda can be loaded (never panics).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { ds::is_culib_present() }
}

fn init_driver() -> Result<(), CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    dr::init().map_err(driver("initialising the driver"))
}

/// The number of CUDA devices (an error when there is no driver or no device).
pub fn device_count() -> Result<usize, CudaError> {
    init_driver()?;
    match dr::device::get_count() {
        Ok(0) => Err(CudaError::NoDevices),
        Ok(n) => Ok(n as usize),
        Err(e) if e.0 == ds::cudaError_enum::CUDA_ERROR_NO_DEVICE => Err(CudaError::NoDevices),
        Err(e) => Err(CudaError::Driver {
            context: "counting devices".into(),
            error: e,
        }),
    }
}

fn check_ordinal(ordinal: usize) -> Result<(), CudaError> {
    let count = device_count()?;
    if ordinal >= count {
        return Err(CudaError::NoSuchDevice {
            requested: ordinal,
            count,
        });
    }
    Ok(())
}

/// A context on device `ordinal`, after checking that the driver, the device and NVRTC (which
/// the kernels need) are all there.
pub fn open(ordinal: usize) -> Result<Arc<CudaContext>, CudaError> {
    check_ordinal(ordinal)?;
    if !compile::nvrtc_present() {
        return Err(CudaError::NoNvrtc);
    }
    CudaContext::new(ordinal).map_err(|e| CudaError::Driver {
        context: format!("creating a context on device {ordinal}"),
        error: e,
    })
}

/// What `crema device_query` prints about one device (Caffe's fields, then crema's).
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub major: i32,
    pub minor: i32,
    pub total_memory: usize,
    pub shared_per_block: i32,
    pub shared_per_block_optin: i32,
    pub registers_per_block: i32,
    pub warp_size: i32,
    pub max_pitch: i32,
    pub max_threads_per_block: i32,
    pub max_block: [i32; 3],
    pub max_grid: [i32; 3],
    pub clock_khz: i32,
    pub total_constant_memory: i32,
    pub texture_alignment: i32,
    pub concurrent_copy: bool,
    pub multiprocessors: i32,
    pub kernel_timeout: bool,
    pub memory_clock_khz: i32,
    pub memory_bus_width: i32,
    pub l2_cache_bytes: i32,
    pub max_threads_per_sm: i32,
    pub ecc: bool,
    pub pci: (i32, i32, i32),
    pub driver_version: i32,
}

impl DeviceInfo {
    /// Reads device `ordinal`'s attributes through the driver (no context is created).
    pub fn query(ordinal: usize) -> Result<DeviceInfo, CudaError> {
        check_ordinal(ordinal)?;
        let dev = dr::device::get(ordinal as i32).map_err(driver("opening the device"))?;
        let attr = |a: A| -> Result<i32, CudaError> {
            // SAFETY: a valid device handle and attribute.
            unsafe { dr::device::get_attribute(dev, a) }.map_err(|e| CudaError::Driver {
                context: format!("reading {a:?}"),
                error: e,
            })
        };
        let mut driver_version = 0;
        // SAFETY: valid out-pointer; the driver is loaded and initialised.
        unsafe { ds::cuDriverGetVersion(&mut driver_version) };
        Ok(DeviceInfo {
            ordinal,
            name: dr::device::get_name(dev).map_err(driver("reading the device name"))?,
            major: attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            minor: attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            // SAFETY: a valid device handle.
            total_memory: unsafe { dr::device::total_mem(dev) }
                .map_err(driver("reading the memory size"))?,
            shared_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?,
            shared_per_block_optin: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
            registers_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK)?,
            warp_size: attr(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE)?,
            max_pitch: attr(A::CU_DEVICE_ATTRIBUTE_MAX_PITCH)?,
            max_threads_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            max_block: [
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X)?,
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y)?,
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z)?,
            ],
            max_grid: [
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?,
                attr(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?,
            ],
            clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?,
            total_constant_memory: attr(A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY)?,
            texture_alignment: attr(A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT)?,
            concurrent_copy: attr(A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT)? > 0,
            multiprocessors: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            kernel_timeout: attr(A::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT)? != 0,
            memory_clock_khz: attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)?,
            memory_bus_width: attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)?,
            l2_cache_bytes: attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?,
            max_threads_per_sm: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR)?,
            ecc: attr(A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED)? != 0,
            pci: (
                attr(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?,
                attr(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?,
                attr(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?,
            ),
            driver_version,
        })
    }

    /// `major * 10 + minor` (90 for an H100).
    pub fn arch(&self) -> u32 {
        (self.major * 10 + self.minor) as u32
    }

    /// The report, one `label: value` line each: first the lines Caffe's `caffe device_query`
    /// logs, with its labels, then crema's additions.
    pub fn render(&self) -> String {
        let yes = |b: bool| if b { "Yes" } else { "No" };
        let mut lines = vec![
            ("Device id", self.ordinal.to_string()),
            ("Major revision number", self.major.to_string()),
            ("Minor revision number", self.minor.to_string()),
            ("Name", self.name.clone()),
            ("Total global memory", self.total_memory.to_string()),
            (
                "Total shared memory per block",
                self.shared_per_block.to_string(),
            ),
            (
                "Total registers per block",
                self.registers_per_block.to_string(),
            ),
            ("Warp size", self.warp_size.to_string()),
            ("Maximum memory pitch", self.max_pitch.to_string()),
            (
                "Maximum threads per block",
                self.max_threads_per_block.to_string(),
            ),
            (
                "Maximum dimension of block",
                format!(
                    "{}, {}, {}",
                    self.max_block[0], self.max_block[1], self.max_block[2]
                ),
            ),
            (
                "Maximum dimension of grid",
                format!(
                    "{}, {}, {}",
                    self.max_grid[0], self.max_grid[1], self.max_grid[2]
                ),
            ),
            ("Clock rate", self.clock_khz.to_string()),
            (
                "Total constant memory",
                self.total_constant_memory.to_string(),
            ),
            ("Texture alignment", self.texture_alignment.to_string()),
            (
                "Concurrent copy and execution",
                yes(self.concurrent_copy).to_string(),
            ),
            (
                "Number of multiprocessors",
                self.multiprocessors.to_string(),
            ),
            (
                "Kernel execution timeout",
                yes(self.kernel_timeout).to_string(),
            ),
        ];
        lines.extend([
            (
                "Compute capability",
                format!("{}.{} (sm_{})", self.major, self.minor, self.arch()),
            ),
            (
                "Total global memory (GiB)",
                format!("{:.1}", self.total_memory as f64 / (1u64 << 30) as f64),
            ),
            (
                "Shared memory per block (opt-in)",
                self.shared_per_block_optin.to_string(),
            ),
            (
                "Maximum threads per multiprocessor",
                self.max_threads_per_sm.to_string(),
            ),
            ("L2 cache size", self.l2_cache_bytes.to_string()),
            ("Memory clock rate (kHz)", self.memory_clock_khz.to_string()),
            ("Memory bus width (bits)", self.memory_bus_width.to_string()),
            ("ECC enabled", yes(self.ecc).to_string()),
            (
                "PCI domain:bus:device",
                format!("{:04x}:{:02x}:{:02x}", self.pci.0, self.pci.1, self.pci.2),
            ),
            (
                "CUDA driver version",
                format!(
                    "{}.{}",
                    self.driver_version / 1000,
                    self.driver_version % 1000 / 10
                ),
            ),
        ]);
        let mut out = String::new();
        for (k, v) in lines {
            out.push_str(&format!("{:<31}{v}\n", format!("{k}:")));
        }
        out
    }
}

/// One line about NVRTC for `device_query`: its version and what it would build for `arch`.
pub fn nvrtc_summary(arch: Option<u32>) -> String {
    if !compile::nvrtc_present() {
        return format!(
            "{:<31}not found ({})\n",
            "NVRTC version:",
            CudaError::NoNvrtc
        );
    }
    let version = match compile::nvrtc_version() {
        Ok((a, b)) => format!("{a}.{b}"),
        Err(e) => return format!("{:<31}{e}\n", "NVRTC version:"),
    };
    let target = match arch.map(compile::target_for_device) {
        Some(Ok((compile::Target::Cubin, a))) => {
            format!(" (kernels compile to sm_{a} machine code)")
        }
        Some(Ok((compile::Target::Ptx, a))) => {
            format!(" (kernels compile to compute_{a} PTX, finished by the driver)")
        }
        Some(Err(e)) => format!(" ({e})"),
        None => String::new(),
    };
    format!("{:<31}{version}{target}\n", "NVRTC version:")
}
