//! Binary protobuf decoding with errors a user can act on.

use anyhow::{bail, Result};
use prost::Message;

/// True when every byte looks like prototxt (printable ASCII, UTF-8 or whitespace). Binary
/// Caffe files always contain tag or length bytes outside that set.
pub fn looks_like_text(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && std::str::from_utf8(bytes).is_ok()
        && bytes
            .iter()
            .all(|&b| b >= 0x20 || b == b'\n' || b == b'\r' || b == b'\t')
}

/// Decodes `bytes` as `T`. `file` and `what` ("caffemodel", "solverstate") name the input in
/// errors.
pub fn decode<T: Message + Default>(bytes: &[u8], file: &str, what: &str) -> Result<T> {
    if bytes.is_empty() {
        bail!("{file}: file is empty, expected a binary {what}");
    }
    if looks_like_text(bytes) {
        bail!(
            "{file}: this is a text file, not a binary {what} (a prototxt? binary Caffe files \
             are written by Caffe's snapshots or `crema train`)"
        );
    }
    T::decode(bytes).map_err(|e| {
        anyhow::anyhow!("{file}: not a valid binary {what} ({e}); the file is truncated or corrupt")
    })
}
