//! Telling Caffe files apart by their content (extensions lie: `.prototxt` files called
//! `.pb`, models called `.bin`), so `crema inspect` can open anything.

use super::binary::looks_like_text;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    NetText,
    SolverText,
    NetBinary,
    SolverState,
    BlobProto,
    BlobProtoVector,
    Unknown,
}

/// Field numbers, wire types and repetition of the top-level fields of a binary message.
fn top_level_fields(bytes: &[u8]) -> Option<Vec<(u32, u8)>> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < bytes.len() {
        let (key, n) = varint(&bytes[i..])?;
        i += n;
        let field = (key >> 3) as u32;
        let wt = (key & 7) as u8;
        if field == 0 {
            return None;
        }
        match wt {
            0 => i += varint(&bytes[i..])?.1,
            1 => i += 8,
            2 => {
                let (len, n) = varint(&bytes[i..])?;
                i = i.checked_add(n)?.checked_add(usize::try_from(len).ok()?)?;
            }
            5 => i += 4,
            _ => return None,
        }
        if i > bytes.len() {
            return None;
        }
        out.push((field, wt));
    }
    Some(out)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Guesses the kind of a binary Caffe file from its top-level wire structure, falling back on
/// the extension where the structure fits several messages.
pub fn detect_binary(bytes: &[u8], ext: &str) -> FileKind {
    let Some(fields) = top_level_fields(bytes) else {
        return FileKind::Unknown;
    };
    let has = |f: u32, wt: u8| fields.iter().any(|&(ff, w)| ff == f && w == wt);
    let count = |f: u32| fields.iter().filter(|&&(ff, _)| ff == f).count();
    if has(100, 2) || has(2, 2) && has(1, 2) {
        return FileKind::NetBinary;
    }
    // BlobProto: packed data/diff (5, 6), shape (7), doubles (8, 9) or legacy dims as varints.
    if has(5, 2) || has(7, 2) || has(8, 2) || has(6, 2) {
        return FileKind::BlobProto;
    }
    // SolverState: iter varint, history (3) messages, learned_net string.
    if has(3, 2) || (has(1, 0) && has(2, 2)) || has(4, 0) && !has(3, 0) {
        return FileKind::SolverState;
    }
    if count(1) > 1 && fields.iter().all(|&(f, w)| f == 1 && w == 2) {
        return FileKind::BlobProtoVector;
    }
    match ext {
        "caffemodel" => FileKind::NetBinary,
        "solverstate" => FileKind::SolverState,
        "binaryproto" => FileKind::BlobProto,
        _ if fields.iter().all(|&(f, w)| f == 1 && w == 2) && !fields.is_empty() => {
            FileKind::BlobProtoVector
        }
        _ if has(1, 0) => FileKind::SolverState,
        _ => FileKind::Unknown,
    }
}

/// Detects the kind of any file: text is tried as a net and as a solver by the caller; this
/// only separates text from binary and classifies text by its field names.
pub fn detect(bytes: &[u8], ext: &str) -> FileKind {
    if looks_like_text(bytes) {
        let text = String::from_utf8_lossy(bytes);
        let solverish = [
            "base_lr",
            "lr_policy",
            "max_iter",
            "train_net",
            "test_iter",
            "solver_mode",
        ];
        let netish = ["layer", "layers", "input_dim", "bottom"];
        let words: Vec<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '_')))
            .collect();
        let s = words.iter().filter(|w| solverish.contains(w)).count();
        let n = words.iter().filter(|w| netish.contains(w)).count();
        if s > 0 && s >= n.min(1) && !words.contains(&"bottom") || ext == "solver" {
            return FileKind::SolverText;
        }
        return FileKind::NetText;
    }
    detect_binary(bytes, ext)
}
