//! Reading HDF5 datasets as f32 (Caffe's `hdf5_load_nd_dataset`), for HDF5Data.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use hdf5::types::TypeDescriptor;

/// One dataset: its shape and values in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads the datasets `names` from `path`; numeric datasets of any type are converted to f32
/// as Caffe's `H5LTread_dataset_float` does.
pub fn load_datasets(path: &Path, names: &[String]) -> Result<Vec<Dataset>> {
    // The library's own error printing would duplicate (and garble) our messages.
    hdf5::silence_errors(true);
    let file = hdf5::File::open(path)
        .map_err(|e| anyhow!("cannot open HDF5 file {}: {e}", path.display()))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if !file.link_exists(name) {
            let have = file.member_names().unwrap_or_default();
            bail!(
                "HDF5 file {} has no dataset '{name}' (HDF5Data reads one dataset per top, named like the top; \
                 the file has: {})",
                path.display(),
                if have.is_empty() { "nothing".to_string() } else { have.join(", ") }
            );
        }
        let ds = file.dataset(name).map_err(|e| {
            anyhow!(
                "HDF5 file {}: '{name}' is not a dataset: {e}",
                path.display()
            )
        })?;
        let dtype = ds.dtype().and_then(|t| t.to_descriptor()).map_err(|e| {
            anyhow!(
                "HDF5 file {}: dataset '{name}' has an unreadable type: {e}",
                path.display()
            )
        })?;
        match dtype {
            TypeDescriptor::Float(_)
            | TypeDescriptor::Integer(_)
            | TypeDescriptor::Unsigned(_)
            | TypeDescriptor::Boolean => {}
            other => bail!(
                "HDF5 file {}: dataset '{name}' holds {other} values; HDF5Data needs numbers",
                path.display()
            ),
        }
        let shape = ds.shape();
        if shape.is_empty() {
            bail!("HDF5 file {}: dataset '{name}' is a scalar; HDF5Data needs at least one axis (rows)", path.display());
        }
        let data: Vec<f32> = ds.read_raw::<f32>().map_err(|e| {
            anyhow!(
                "HDF5 file {}: cannot read dataset '{name}' as float: {e}",
                path.display()
            )
        })?;
        out.push(Dataset { shape, data });
    }
    Ok(out)
}
