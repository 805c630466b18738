//! Reading and writing Caffe's files by path, with the upgrades applied and logged.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use prost::Message;

use super::binary::decode;
use super::caffe::{BlobProto, BlobProtoVector, NetParameter, SolverParameter, SolverState};
use super::text::{ensure_text, parse, TextOptions};
use super::upgrade::{upgrade_net, upgrade_solver, Note};

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn log_notes(notes: &[Note]) {
    for n in notes {
        if n.warning {
            crate::warn!("{}", n.text);
        } else {
            crate::info!("{}", n.text);
        }
    }
}

fn log_dropped(dropped: &[super::text::DroppedField], file: &str) {
    for d in dropped {
        crate::warn!(
            "{file}:{}:{}: ignoring unknown field '{}' in {} (--allow-unknown-fields)",
            d.line,
            d.col,
            d.field,
            d.message
        );
    }
}

/// Parses net prototxt text (already read) and upgrades it.
pub fn parse_net_text(text: &str, file: &str, opts: TextOptions) -> Result<NetParameter> {
    let parsed = parse::<NetParameter>(text, "caffe.NetParameter", file, opts)?;
    log_dropped(&parsed.dropped, file);
    let mut net = parsed.message;
    let notes = upgrade_net(&mut net, file)?;
    log_notes(&notes);
    Ok(net)
}

/// Reads a net prototxt (`--model`, `net:` in a solver).
pub fn read_net_text(path: &Path, opts: TextOptions) -> Result<NetParameter> {
    let bytes = read_bytes(path)?;
    let file = path.display().to_string();
    let text = ensure_text(&bytes, &file)?;
    parse_net_text(text, &file, opts)
}

/// Parses solver prototxt text and upgrades it; nets inlined in it are upgraded too.
pub fn parse_solver_text(text: &str, file: &str, opts: TextOptions) -> Result<SolverParameter> {
    let parsed = parse::<SolverParameter>(text, "caffe.SolverParameter", file, opts)?;
    log_dropped(&parsed.dropped, file);
    let mut solver = parsed.message;
    let mut notes = upgrade_solver(&mut solver, file)?;
    for net in solver
        .net_param
        .iter_mut()
        .chain(solver.train_net_param.iter_mut())
        .chain(solver.test_net_param.iter_mut())
    {
        notes.extend(upgrade_net(net, file)?);
    }
    log_notes(&notes);
    Ok(solver)
}

/// Reads a solver prototxt.
pub fn read_solver_text(path: &Path, opts: TextOptions) -> Result<SolverParameter> {
    let bytes = read_bytes(path)?;
    let file = path.display().to_string();
    let text = ensure_text(&bytes, &file)?;
    parse_solver_text(text, &file, opts)
}

/// Decodes a binary net (caffemodel) from bytes and upgrades it.
pub fn decode_net_binary(bytes: &[u8], file: &str) -> Result<NetParameter> {
    let mut net: NetParameter = decode(bytes, file, "caffemodel")?;
    let notes = upgrade_net(&mut net, file)?;
    log_notes(&notes);
    Ok(net)
}

/// Reads a `.caffemodel`.
pub fn read_net_binary(path: &Path) -> Result<NetParameter> {
    let bytes = read_bytes(path)?;
    decode_net_binary(&bytes, &path.display().to_string())
}

/// Reads a `.solverstate`.
pub fn read_solverstate(path: &Path) -> Result<SolverState> {
    let bytes = read_bytes(path)?;
    decode(&bytes, &path.display().to_string(), "solverstate")
}

/// Reads a `.binaryproto` holding one BlobProto (mean files).
pub fn read_binary_proto_file(path: &Path) -> Result<BlobProto> {
    let bytes = read_bytes(path)?;
    decode(&bytes, &path.display().to_string(), "binaryproto")
}

/// Reads a `.binaryproto` holding a BlobProtoVector.
pub fn read_blob_proto_vector(path: &Path) -> Result<BlobProtoVector> {
    let bytes = read_bytes(path)?;
    decode(&bytes, &path.display().to_string(), "BlobProtoVector")
}

/// Writes `msg` to `path` through a temporary file in the same folder, synced and renamed, so
/// a crash or a kill never leaves a half-written file under the final name.
pub fn write_binary_atomic<M: Message>(path: &Path, msg: &M) -> Result<()> {
    write_bytes_atomic(path, &msg.encode_to_vec())
}

/// Atomic write of raw bytes (see `write_binary_atomic`).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot sync {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
