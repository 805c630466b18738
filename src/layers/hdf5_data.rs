//! HDF5Data: rows of HDF5 datasets (one dataset per top, named like the top) from the files
//! listed in a text file, in order or shuffled, wrapping around after the last file.
//! Needs crema's `hdf5` cargo feature (the system HDF5 library).

use anyhow::Result;

use super::Layer;
use crate::proto::caffe::LayerParameter;

/// Creates the layer, or explains how to get HDF5 support when it was built without.
pub fn create(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    #[cfg(feature = "hdf5")]
    {
        Ok(Box::new(imp::HDF5DataLayer::new(param)))
    }
    #[cfg(not(feature = "hdf5"))]
    {
        anyhow::bail!(
            "layer '{}': crema was built without HDF5 support, so HDF5Data layers cannot be used. \
             Rebuild with the `hdf5` feature (`cargo build --release --features hdf5`); it needs the \
             HDF5 library and pkg-config (Debian/Ubuntu: `apt-get install libhdf5-dev pkg-config`)",
            param.name()
        )
    }
}

#[cfg(feature = "hdf5")]
pub use imp::HDF5DataLayer;

#[cfg(feature = "hdf5")]
mod imp {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context, Result};

    use super::super::{Arity, Ctx, Layer, LayerBase};
    use crate::backend::cuda::gpu::Gpu;
    use crate::backend::cuda::staging::PinnedUpload;
    use crate::blob::BlobRef;
    use crate::data::hdf5::{load_datasets, Dataset};
    use crate::data::shuffle;
    use crate::proto::caffe::LayerParameter;
    use crate::rng::CaffeRng;

    pub struct HDF5DataLayer {
        base: LayerBase,
        files: Vec<String>,
        file_perm: Vec<usize>,
        current_file: usize,
        current_row: usize,
        /// The current file's datasets, one per top.
        sets: Vec<Dataset>,
        row_perm: Vec<usize>,
        batch_size: usize,
        shuffle: bool,
        rng: CaffeRng,
        /// Per-row shape of each top (dims after the first), fixed by the first file.
        row_shapes: Vec<Vec<usize>>,
        top_names: Vec<String>,
        waited: Duration,
        /// Pinned buffers the batches go to the GPU through, one per top (GPU runs only).
        uploads: Vec<PinnedUpload>,
    }

    impl HDF5DataLayer {
        pub fn new(param: &LayerParameter) -> Self {
            HDF5DataLayer {
                base: LayerBase::new(param),
                files: Vec::new(),
                file_perm: Vec::new(),
                current_file: 0,
                current_row: 0,
                sets: Vec::new(),
                row_perm: Vec::new(),
                batch_size: 0,
                shuffle: false,
                rng: CaffeRng::new(0),
                row_shapes: Vec::new(),
                top_names: Vec::new(),
                waited: Duration::ZERO,
                uploads: Vec::new(),
            }
        }

        fn load_file(&mut self, idx: usize) -> Result<()> {
            let file = self.files[idx].clone();
            crate::info!("Loading HDF5 file: {file}");
            let sets = load_datasets(&PathBuf::from(&file), &self.top_names)
                .with_context(|| format!("layer '{}'", self.base.name()))?;
            let rows = sets[0].shape[0];
            for (name, s) in self.top_names.iter().zip(&sets) {
                if s.shape[0] != rows {
                    bail!(
                        "layer '{}': HDF5 file {file}: dataset '{name}' has {} rows but '{}' has {rows}; \
                         all datasets must have the same first dimension",
                        self.base.name(),
                        s.shape[0],
                        self.top_names[0]
                    );
                }
            }
            if rows == 0 {
                bail!(
                    "layer '{}': HDF5 file {file} has datasets with no rows",
                    self.base.name()
                );
            }
            if !self.row_shapes.is_empty() {
                for ((name, s), want) in self.top_names.iter().zip(&sets).zip(&self.row_shapes) {
                    if &s.shape[1..] != want.as_slice() {
                        bail!(
                            "layer '{}': HDF5 file {file}: dataset '{name}' has rows of shape {:?} but the first \
                             file's rows are {:?}; every file must have the same row shape",
                            self.base.name(),
                            &s.shape[1..],
                            want
                        );
                    }
                }
            }
            crate::info!("Successfully loaded {rows} rows");
            self.row_perm = (0..rows).collect();
            if self.shuffle {
                shuffle(&mut self.row_perm, &mut self.rng);
            }
            self.sets = sets;
            Ok(())
        }

        /// The next `batch_size` rows: `put(top, offset, row values)` for each row of each top,
        /// in order.
        fn read_batch(&mut self, mut put: impl FnMut(usize, usize, &[f32])) -> Result<()> {
            for i in 0..self.batch_size {
                let row = self.row_perm[self.current_row];
                for j in 0..self.sets.len() {
                    let dim: usize = self.row_shapes[j].iter().product();
                    put(j, i * dim, &self.sets[j].data[row * dim..(row + 1) * dim]);
                }
                self.next_row()?;
            }
            Ok(())
        }

        /// Advances to the next row; at a file's end moves to the next file (reshuffling
        /// files after the last one, and rows of each newly loaded file).
        fn next_row(&mut self) -> Result<()> {
            self.current_row += 1;
            if self.current_row == self.sets[0].shape[0] {
                if self.files.len() > 1 {
                    self.current_file += 1;
                    if self.current_file == self.files.len() {
                        self.current_file = 0;
                        if self.shuffle {
                            shuffle(&mut self.file_perm, &mut self.rng);
                        }
                    }
                    self.load_file(self.file_perm[self.current_file])?;
                } else if self.shuffle {
                    shuffle(&mut self.row_perm, &mut self.rng);
                }
                self.current_row = 0;
            }
            Ok(())
        }
    }

    impl Layer for HDF5DataLayer {
        fn type_name(&self) -> &'static str {
            "HDF5Data"
        }
        fn base(&self) -> &LayerBase {
            &self.base
        }
        fn base_mut(&mut self) -> &mut LayerBase {
            &mut self.base
        }
        fn bottom_arity(&self) -> Arity {
            Arity::Exact(0)
        }
        fn top_arity(&self) -> Arity {
            Arity::Min(1)
        }

        fn setup(
            &mut self,
            rng: &mut CaffeRng,
            _bottom: &[BlobRef],
            top: &[BlobRef],
        ) -> Result<()> {
            let name = self.name().to_string();
            let p = self.base.param.hdf5_data_param.clone().unwrap_or_default();
            if self.base.param.transform_param.is_some() {
                crate::warn!(
                    "layer '{name}': HDF5Data does not transform its data; transform_param is ignored (as in \
                     Caffe): store the data already scaled"
                );
            }
            let source = p.source().to_string();
            if source.is_empty() {
                bail!("layer '{name}': hdf5_data_param.source is not set");
            }
            self.batch_size = p.batch_size() as usize;
            if self.batch_size == 0 {
                bail!("layer '{name}': hdf5_data_param.batch_size must be positive");
            }
            self.shuffle = p.shuffle();
            self.top_names = self.base.param.top.clone();
            crate::info!("Loading list of HDF5 filenames from: {source}");
            let text = std::fs::read_to_string(&source).with_context(|| {
                format!("layer '{name}': cannot read the HDF5 file list {source}")
            })?;
            // Caffe reads the list with `>>`: whitespace-separated names.
            self.files = text.split_whitespace().map(str::to_string).collect();
            if self.files.is_empty() {
                bail!("layer '{name}': {source} lists no HDF5 file (it must name at least one .h5 file)");
            }
            crate::info!("Number of HDF5 files: {}", self.files.len());
            self.file_perm = (0..self.files.len()).collect();
            if self.shuffle {
                self.rng = CaffeRng::new(rng.next_u32() as u64);
                shuffle(&mut self.file_perm, &mut self.rng);
            }
            self.current_file = 0;
            self.load_file(self.file_perm[0])?;
            self.current_row = 0;
            self.row_shapes = self.sets.iter().map(|s| s.shape[1..].to_vec()).collect();
            for (t, s) in top.iter().zip(&self.row_shapes) {
                let mut shape = vec![self.batch_size];
                shape.extend_from_slice(s);
                t.reshape(&shape)?;
            }
            Ok(())
        }

        fn reshape(&mut self, _bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
            Ok(())
        }

        fn forward(&mut self, _ctx: &mut Ctx, _bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
            let start = Instant::now();
            let bufs: Vec<_> = top.iter().map(|t| t.data_buf()).collect();
            self.read_batch(|j, at, values| {
                bufs[j].borrow_mut()[at..at + values.len()].copy_from_slice(values)
            })?;
            self.waited += start.elapsed();
            Ok(())
        }

        /// The batch is gathered on the host (HDF5 has no prefetch thread: its rows are in
        /// memory) and goes up through pinned buffers, one copy per top.
        fn forward_gpu(
            &mut self,
            _ctx: &mut Ctx,
            g: &Gpu,
            _bottom: &[BlobRef],
            top: &[BlobRef],
        ) -> Result<()> {
            let start = Instant::now();
            let mut batch: Vec<Vec<f32>> = top.iter().map(|t| vec![0f32; t.count()]).collect();
            self.read_batch(|j, at, values| {
                batch[j][at..at + values.len()].copy_from_slice(values)
            })?;
            self.waited += start.elapsed();
            if self.uploads.len() != top.len() {
                self.uploads = top.iter().map(|_| PinnedUpload::new()).collect();
            }
            for ((up, t), values) in self.uploads.iter_mut().zip(top).zip(&batch) {
                up.upload(g, values, &t.data_buf())?;
            }
            Ok(())
        }

        fn backward_gpu(
            &mut self,
            _: &mut Ctx,
            _: &Gpu,
            _: &[BlobRef],
            _: &[bool],
            _: &[BlobRef],
        ) -> Result<()> {
            Ok(())
        }

        fn runs_on_gpu(&self) -> bool {
            true
        }

        fn backward(
            &mut self,
            _: &mut Ctx,
            _: &[BlobRef],
            _: &[bool],
            _: &[BlobRef],
        ) -> Result<()> {
            Ok(())
        }

        fn data_wait(&self) -> Option<Duration> {
            Some(self.waited)
        }
    }
}
