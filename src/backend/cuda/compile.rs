//! Run-time compilation of crema's kernels (`kernels/*.cu`) with NVRTC.
//!
//! The sources are embedded in the binary, so `cargo build` needs no CUDA toolkit, and they are
//! compiled at first use for the exact architecture of the device in hand: a cubin (`sm_XX`)
//! that the driver loads as is, so the trap of PTX newer than the driver cannot happen. When the
//! device is newer than this NVRTC knows, the newest `compute_XX` PTX it can emit is used and
//! the driver finishes the job.
//!
//! Results are cached on disk under `$XDG_CACHE_HOME/crema/kernels` (or
//! `~/.cache/crema/kernels`), keyed by a hash of the source, the shared header, the options, the
//! NVRTC version and the architecture; files are written to a temporary name and renamed, so a
//! concurrent crema never reads half a file.
//!
//! NVRTC itself is loaded at run time by cudarc (`libnvrtc.so.13` on the library path). Setting
//! `CREMA_NVRTC_LIB_DIR` to a directory holding it (for instance the one
//! `scripts/install-nvrtc.sh` prints) makes crema load it from there first.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::sys as nv;

use super::device::CudaError;

/// One kernel source file.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// The file's stem, which prefixes every entry point in it (`activation` ->
    /// `activation_relu_fwd_f32`).
    pub family: &'static str,
    /// Its path in the repository, for messages.
    pub path: &'static str,
    pub source: &'static str,
}

macro_rules! kernel_file {
    ($family:literal) => {
        KernelFile {
            family: $family,
            path: concat!("kernels/", $family, ".cu"),
            source: include_str!(concat!("../../../kernels/", $family, ".cu")),
        }
    };
}

/// The shared header every kernel file includes, handed to NVRTC in memory as "common.cuh".
pub const COMMON_HEADER: &str = include_str!("../../../kernels/common.cuh");
pub const COMMON_HEADER_NAME: &str = "common.cuh";

/// Every kernel file, in the order `crema kernels --check` reports them.
pub const KERNEL_FILES: &[KernelFile] = &[
    kernel_file!("activation"),
    kernel_file!("dropout"),
    kernel_file!("eltwise"),
    kernel_file!("batchnorm"),
    kernel_file!("scale"),
    kernel_file!("pooling"),
    kernel_file!("softmax"),
    kernel_file!("loss"),
    kernel_file!("gemm"),
    kernel_file!("conv"),
    kernel_file!("tensor"),
    kernel_file!("lrn"),
    kernel_file!("solver"),
    kernel_file!("reduction"),
    kernel_file!("mvn"),
    kernel_file!("prelu"),
    kernel_file!("embed"),
];

/// The kernel file of a family.
pub fn kernel_file(family: &str) -> Option<&'static KernelFile> {
    KERNEL_FILES.iter().find(|f| f.family == family)
}

/// The `extern "C" __global__` entry points of a source, in source order (comments skipped;
/// `__launch_bounds__(...)` and line breaks between the keywords and the name allowed).
pub fn entry_points(source: &str) -> Vec<String> {
    let text = strip_comments(source);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(pos) = rest.find("extern \"C\"") {
        rest = &rest[pos + "extern \"C\"".len()..];
        let Some(paren) = rest.find('(') else { break };
        let head = &rest[..paren];
        if !head.contains("__global__") {
            continue;
        }
        // `__launch_bounds__(...)` opens a parenthesis before the name's: skip it.
        let mut head_end = paren;
        if head.contains("__launch_bounds__") {
            let close = rest[paren..]
                .find(')')
                .map(|c| paren + c + 1)
                .unwrap_or(paren);
            let next = rest[close..].find('(').map(|c| close + c).unwrap_or(close);
            head_end = next;
        }
        let name = rest[..head_end]
            .split_whitespace()
            .last()
            .unwrap_or("")
            .to_string();
        if !name.is_empty() {
            out.push(name);
        }
        rest = &rest[head_end..];
    }
    out
}

/// `source` with `//` and `/* */` comments replaced by spaces (string literals are not
/// special-cased: kernel sources have none that hold comment markers).
pub fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '/' && chars.peek() == Some(&'/') {
            for c in chars.by_ref() {
                if c == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else if c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            let mut prev = ' ';
            for c in chars.by_ref() {
                if prev == '*' && c == '/' {
                    break;
                }
                prev = c;
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

// ---- Loading NVRTC ------------------------------------------------------------------------------

/// Loads NVRTC from `CREMA_NVRTC_LIB_DIR` when set (its builtins library first, because
/// libnvrtc opens that one by bare name), so that cudarc's own `dlopen("libnvrtc.so.13")`
/// finds the already loaded library by its soname. Done once; the handles are never closed.
fn preload_from_env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Some(dir) = std::env::var_os("CREMA_NVRTC_LIB_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let builtins = names.iter().find(|n| n.starts_with("libnvrtc-builtins.so"));
        let nvrtc = names
            .iter()
            .find(|n| n.as_str() == "libnvrtc.so.13")
            .or_else(|| names.iter().find(|n| n.starts_with("libnvrtc.so")));
        for name in builtins.into_iter().chain(nvrtc) {
            if let Ok(path) = CString::new(dir.join(name).to_string_lossy().into_owned()) {
                // SAFETY: dlopen with a valid C string; the handle is deliberately leaked.
                unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            }
        }
    });
}

/// Whether NVRTC can be loaded (never panics; cudarc would panic on first use without it).
pub fn nvrtc_present() -> bool {
    preload_from_env();
    // SAFETY: only tries to dlopen the library.
    unsafe { nv::is_culib_present() }
}

fn require_nvrtc() -> Result<(), CudaError> {
    if nvrtc_present() {
        Ok(())
    } else {
        Err(CudaError::NoNvrtc)
    }
}

/// NVRTC's (major, minor) version.
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    require_nvrtc()?;
    let (mut major, mut minor) = (0 as c_int, 0 as c_int);
    // SAFETY: NVRTC is loadable; the out-pointers are valid.
    check(
        unsafe { nv::nvrtcVersion(&mut major, &mut minor) },
        "nvrtcVersion",
    )?;
    Ok((major, minor))
}

/// The `sm_XX` numbers (75, 80, 90, ...) this NVRTC can compile for.
pub fn supported_archs() -> Result<Vec<u32>, CudaError> {
    require_nvrtc()?;
    let mut n: c_int = 0;
    // SAFETY: valid out-pointer.
    check(
        unsafe { nv::nvrtcGetNumSupportedArchs(&mut n) },
        "nvrtcGetNumSupportedArchs",
    )?;
    let mut archs = vec![0 as c_int; n.max(0) as usize];
    // SAFETY: the buffer holds `n` ints, as NVRTC asked.
    check(
        unsafe { nv::nvrtcGetSupportedArchs(archs.as_mut_ptr()) },
        "nvrtcGetSupportedArchs",
    )?;
    Ok(archs.into_iter().map(|a| a as u32).collect())
}

fn check(r: nv::nvrtcResult, what: &str) -> Result<(), CudaError> {
    if r == nv::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        // SAFETY: nvrtcGetErrorString returns a static C string.
        let msg = unsafe { CStr::from_ptr(nv::nvrtcGetErrorString(r)) }
            .to_string_lossy()
            .into_owned();
        Err(CudaError::Nvrtc(format!("{what}: {msg}")))
    }
}

/// Parses an architecture as users write it: `sm_90`, `sm90`, `compute_90`, `90`, `9.0`.
pub fn parse_arch(s: &str) -> Result<u32, CudaError> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_prefix("sm_")
        .or_else(|| t.strip_prefix("compute_"))
        .or_else(|| t.strip_prefix("sm"))
        .unwrap_or(&t);
    let v = if let Some((a, b)) = t.split_once('.') {
        a.parse::<u32>()
            .ok()
            .zip(b.parse::<u32>().ok())
            .map(|(a, b)| a * 10 + b)
    } else {
        t.parse::<u32>().ok()
    };
    match v {
        Some(v) if (30..=1000).contains(&v) => Ok(v),
        _ => Err(CudaError::Nvrtc(format!(
            "'{s}' is not a GPU architecture (write it like sm_90)"
        ))),
    }
}

// ---- Compiling ------------------------------------------------------------------------------------

/// What NVRTC is asked for: machine code for one architecture, or PTX for the driver to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cubin,
    Ptx,
}

/// A compiled kernel file.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub target: Target,
    pub arch: u32,
    /// The cubin, or the PTX text (no trailing NUL).
    pub image: Vec<u8>,
    /// NVRTC's program log (with `--ptxas-options=-v`, ptxas's resource report).
    pub log: String,
}

/// The options every kernel is compiled with (plus the architecture).
pub const BASE_OPTIONS: &[&str] = &["--std=c++17"];

fn options(target: Target, arch: u32, extra: &[&str]) -> Vec<String> {
    let arch_opt = match target {
        Target::Cubin => format!("--gpu-architecture=sm_{arch}"),
        Target::Ptx => format!("--gpu-architecture=compute_{arch}"),
    };
    let mut v = vec![arch_opt];
    v.extend(BASE_OPTIONS.iter().map(|s| s.to_string()));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Compiles one kernel file. A compilation failure names the file and carries NVRTC's log.
pub fn compile(
    file: &KernelFile,
    target: Target,
    arch: u32,
    extra_options: &[&str],
) -> Result<Compiled, CudaError> {
    require_nvrtc()?;
    let opts = options(target, arch, extra_options);
    let src = CString::new(file.source)
        .map_err(|_| CudaError::Nvrtc(format!("{}: NUL byte in source", file.path)))?;
    let name = CString::new(file.path).expect("paths have no NUL");
    let header = CString::new(COMMON_HEADER).expect("header has no NUL");
    let header_name = CString::new(COMMON_HEADER_NAME).expect("no NUL");
    let headers = [header.as_ptr()];
    let header_names = [header_name.as_ptr()];
    let mut prog: nv::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: all strings outlive the program (destroyed below); arrays hold one entry each.
    check(
        unsafe {
            nv::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                1,
                headers.as_ptr(),
                header_names.as_ptr(),
            )
        },
        "nvrtcCreateProgram",
    )?;
    struct Program(nv::nvrtcProgram);
    impl Drop for Program {
        fn drop(&mut self) {
            // SAFETY: created above, destroyed once.
            unsafe { nv::nvrtcDestroyProgram(&mut self.0) };
        }
    }
    let prog = Program(prog);
    let c_opts: Vec<CString> = opts
        .iter()
        .map(|o| CString::new(o.as_str()).expect("no NUL"))
        .collect();
    let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: the option strings outlive the call.
    let result =
        unsafe { nv::nvrtcCompileProgram(prog.0, opt_ptrs.len() as c_int, opt_ptrs.as_ptr()) };
    let log = program_log(prog.0);
    if result != nv::nvrtcResult::NVRTC_SUCCESS {
        return Err(CudaError::Compile {
            file: file.path.to_string(),
            arch: match target {
                Target::Cubin => format!("sm_{arch}"),
                Target::Ptx => format!("compute_{arch}"),
            },
            log: log.trim_end().to_string(),
        });
    }
    let image = match target {
        Target::Cubin => {
            let mut size = 0usize;
            // SAFETY: valid program and out-pointer; the buffer has the size NVRTC reported.
            check(
                unsafe { nv::nvrtcGetCUBINSize(prog.0, &mut size) },
                "nvrtcGetCUBINSize",
            )?;
            let mut buf = vec![0u8; size];
            check(
                unsafe { nv::nvrtcGetCUBIN(prog.0, buf.as_mut_ptr() as *mut c_char) },
                "nvrtcGetCUBIN",
            )?;
            buf
        }
        Target::Ptx => {
            let mut size = 0usize;
            // SAFETY: as above.
            check(
                unsafe { nv::nvrtcGetPTXSize(prog.0, &mut size) },
                "nvrtcGetPTXSize",
            )?;
            let mut buf = vec![0u8; size];
            check(
                unsafe { nv::nvrtcGetPTX(prog.0, buf.as_mut_ptr() as *mut c_char) },
                "nvrtcGetPTX",
            )?;
            while buf.last() == Some(&0) {
                buf.pop();
            }
            buf
        }
    };
    Ok(Compiled {
        target,
        arch,
        image,
        log,
    })
}

fn program_log(prog: nv::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: valid program; the buffer has the size NVRTC reported.
    if unsafe { nv::nvrtcGetProgramLogSize(prog, &mut size) } != nv::nvrtcResult::NVRTC_SUCCESS
        || size == 0
    {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    if unsafe { nv::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) }
        != nv::nvrtcResult::NVRTC_SUCCESS
    {
        return String::new();
    }
    while buf.last() == Some(&0) {
        buf.pop();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

// ---- ptxas's report ------------------------------------------------------------------------------

/// One entry point's resources, from `--ptxas-options=-v`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub name: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub barriers: u32,
}

/// Parses ptxas's verbose report in an NVRTC log: per entry function, "Used N registers, ...
/// M bytes smem" and "S bytes stack frame, X bytes spill stores, Y bytes spill loads".
pub fn parse_ptxas_report(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    let mut current: Option<usize> = None;
    let number_before = |line: &str, key: &str| -> Option<u32> {
        let pos = line.find(key)?;
        line[..pos]
            .split(|c: char| !c.is_ascii_digit())
            .rfind(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    for line in log.lines() {
        if let Some(pos) = line.find("Compiling entry function '") {
            let rest = &line[pos + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(Resources {
                name,
                ..Default::default()
            });
            current = Some(out.len() - 1);
            continue;
        }
        let Some(i) = current else { continue };
        let r = &mut out[i];
        if line.contains("bytes stack frame") {
            r.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            r.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            r.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used ") && line.contains("registers") {
            r.registers = number_before(line, "registers").unwrap_or(0);
            r.barriers = number_before(line, "barriers").unwrap_or(0);
            r.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    out
}

// ---- The disk cache ----------------------------------------------------------------------------

/// `$XDG_CACHE_HOME/crema/kernels`, else `~/.cache/crema/kernels`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("crema").join("kernels"))
}

/// The cache key of a compilation: FNV-1a 64 over everything that decides its output.
pub fn cache_key(file: &KernelFile, target: Target, arch: u32, nvrtc: (i32, i32)) -> String {
    let mut text = String::new();
    for part in [file.path, file.source, COMMON_HEADER] {
        text.push_str(part);
        text.push('\u{0}');
    }
    for o in options(target, arch, &[]) {
        text.push_str(&o);
        text.push('\u{0}');
    }
    text.push_str(&format!("nvrtc {}.{}", nvrtc.0, nvrtc.1));
    format!("{:016x}", crate::util::hash::fnv1a64(text.as_bytes()))
}

fn cache_path(dir: &Path, file: &KernelFile, target: Target, arch: u32, key: &str) -> PathBuf {
    let ext = match target {
        Target::Cubin => "cubin",
        Target::Ptx => "ptx",
    };
    dir.join(format!(
        "{}-{}{}-{key}.{ext}",
        file.family,
        if target == Target::Cubin {
            "sm_"
        } else {
            "compute_"
        },
        arch
    ))
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, then rename).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kernel"),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&tmp, bytes)?;
    match std::fs::rename(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Chooses what to build for a device of compute capability `arch`: its own cubin when NVRTC
/// supports it, else PTX for the newest architecture NVRTC knows below it (the driver compiles
/// that), else an error.
pub fn target_for_device(arch: u32) -> Result<(Target, u32), CudaError> {
    let supported = supported_archs()?;
    if supported.contains(&arch) {
        return Ok((Target::Cubin, arch));
    }
    match supported.iter().copied().filter(|&a| a < arch).max() {
        Some(a) => Ok((Target::Ptx, a)),
        None => Err(CudaError::Nvrtc(format!(
            "this NVRTC cannot compile for sm_{arch} (it supports {}); crema's GPU backend needs a newer GPU or an older NVRTC",
            supported.iter().map(|a| format!("sm_{a}")).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The module image of a kernel file for a device of compute capability `arch`: from the disk
/// cache when present, else compiled (and cached; a cache that cannot be written is skipped).
pub fn module_image(file: &KernelFile, arch: u32) -> Result<Compiled, CudaError> {
    let (target, build_arch) = target_for_device(arch)?;
    let nvrtc = nvrtc_version()?;
    let key = cache_key(file, target, build_arch, nvrtc);
    let path = cache_dir().map(|d| cache_path(&d, file, target, build_arch, &key));
    if let Some(p) = &path {
        if let Ok(bytes) = std::fs::read(p) {
            if !bytes.is_empty() {
                return Ok(Compiled {
                    target,
                    arch: build_arch,
                    image: bytes,
                    log: String::new(),
                });
            }
        }
    }
    let compiled = compile(file, target, build_arch, &[])?;
    if let Some(p) = &path {
        let _ = write_atomically(p, &compiled.image);
    }
    Ok(compiled)
}

/// Removes a cached image (after the driver refused to load it, say).
pub fn forget_cached(file: &KernelFile, arch: u32) {
    if let (Ok((target, build_arch)), Ok(nvrtc), Some(dir)) =
        (target_for_device(arch), nvrtc_version(), cache_dir())
    {
        let key = cache_key(file, target, build_arch, nvrtc);
        let _ = std::fs::remove_file(cache_path(&dir, file, target, build_arch, &key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_are_found_and_named_by_family() {
        let mut total = 0;
        for f in KERNEL_FILES {
            let names = entry_points(f.source);
            assert!(!names.is_empty(), "{}: no entry points", f.path);
            for n in &names {
                assert!(
                    n.starts_with(&format!("{}_", f.family)),
                    "{}: '{n}' does not start with '{}_'",
                    f.path,
                    f.family
                );
                assert!(
                    n.ends_with("_f32"),
                    "{}: '{n}' does not end with _f32",
                    f.path
                );
            }
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                names.len(),
                "{}: duplicate entry points",
                f.path
            );
            total += names.len();
        }
        assert!(total >= 80, "{total} entry points");
        let gemm = entry_points(kernel_file("gemm").unwrap().source);
        assert_eq!(gemm, vec!["gemm_sgemm_128x128_f32", "gemm_sgemm_64x64_f32"]);
    }

    #[test]
    fn comments_do_not_count() {
        let src = "// extern \"C\" __global__ void fake_a(int x)\n/* extern \"C\" __global__ void fake_b() */\nextern \"C\" __global__ void\n  real_one_f32(int x) {}\nextern \"C\" __global__ void __launch_bounds__(256, 2)\n    real_two_f32(int y) {}\n";
        assert_eq!(entry_points(src), vec!["real_one_f32", "real_two_f32"]);
    }

    #[test]
    fn arch_spellings() {
        for s in ["sm_90", "SM_90", "compute_90", "90", "9.0", "sm90"] {
            assert_eq!(parse_arch(s).unwrap(), 90, "{s}");
        }
        assert_eq!(parse_arch("sm_80").unwrap(), 80);
        assert!(parse_arch("hopper").is_err());
        assert!(parse_arch("sm_9").is_err());
    }

    #[test]
    fn ptxas_report_parsing() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'gemm_sgemm_128x128_f32' for 'sm_90'\n\
ptxas info    : Function properties for gemm_sgemm_128x128_f32\n\
ptxas         .     8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n\
ptxas info    : Used 128 registers, used 1 barriers, 8 bytes cumulative stack size, 16896 bytes smem\n\
ptxas info    : Compile time = 30.1 ms\n\
ptxas info    : Compiling entry function 'tensor_fill_f32' for 'sm_90'\n\
ptxas info    : Function properties for tensor_fill_f32\n\
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers, used 0 barriers, 380 bytes cmem[0]\n";
        let r = parse_ptxas_report(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            Resources {
                name: "gemm_sgemm_128x128_f32".into(),
                registers: 128,
                shared_bytes: 16896,
                stack_bytes: 8,
                spill_stores: 12,
                spill_loads: 16,
                barriers: 1
            }
        );
        assert_eq!(
            (r[1].registers, r[1].shared_bytes, r[1].spill_stores),
            (10, 0, 0)
        );
    }

    #[test]
    fn cache_keys_change_with_everything_that_matters() {
        let f = kernel_file("tensor").unwrap();
        let k = cache_key(f, Target::Cubin, 90, (13, 0));
        assert_eq!(k, cache_key(f, Target::Cubin, 90, (13, 0)));
        assert_ne!(k, cache_key(f, Target::Cubin, 80, (13, 0)));
        assert_ne!(k, cache_key(f, Target::Ptx, 90, (13, 0)));
        assert_ne!(k, cache_key(f, Target::Cubin, 90, (13, 1)));
        assert_ne!(
            k,
            cache_key(kernel_file("lrn").unwrap(), Target::Cubin, 90, (13, 0))
        );
    }

    #[test]
    fn atomic_write_replaces_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("x.cubin");
        write_atomically(&p, b"first").unwrap();
        write_atomically(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
