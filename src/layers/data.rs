//! Data: batches of Datum records from an LMDB database, in key order, wrapping around at the
//! end, transformed by the DataTransformer on a prefetch thread.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::staging::BatchUpload;
use crate::blob::BlobRef;
use crate::data::image::{decode_image, Image};
use crate::data::lmdb::LmdbCursor;
use crate::data::prefetch::{Batch, BatchLoader, Prefetcher};
use crate::data::transformer::{decode_datum, DataTransformer, Pixels};
use crate::proto::caffe::data_parameter::Db;
use crate::proto::caffe::{Datum, LayerParameter};
use crate::rng::CaffeRng;

pub struct DataLayer {
    base: LayerBase,
    prefetch: Option<Prefetcher>,
    /// Pinned buffers the batches go to the GPU through (GPU runs only).
    upload: BatchUpload,
}

impl DataLayer {
    pub fn new(param: &LayerParameter) -> Self {
        DataLayer {
            base: LayerBase::new(param),
            prefetch: None,
            upload: BatchUpload::default(),
        }
    }
}

/// The message for a LevelDB source: crema has no LevelDB reader.
fn leveldb_unsupported(layer: &str, source: &str) -> anyhow::Error {
    if Path::new(source).join("data.mdb").is_file() {
        return anyhow::anyhow!(
            "layer '{layer}': data_param.backend is LEVELDB (the default when `backend` is not given), \
             but {source} is an LMDB database: add `backend: LMDB` to data_param"
        );
    }
    anyhow::anyhow!(
        "layer '{layer}': LevelDB sources are not supported yet (data_param.backend: LEVELDB, source {source}). \
         Convert the database to LMDB and set `backend: LMDB`: rebuild it with Caffe's \
         `convert_imageset --backend=lmdb`, or copy its records with Python (pip install plyvel lmdb):\n  \
         import plyvel, lmdb\n  src = plyvel.DB('{source}')\n  \
         env = lmdb.open('{source}_lmdb', map_size=1 << 40)\n  \
         with env.begin(write=True) as txn:\n      for k, v in src: txn.put(k, v)"
    )
}

/// What the prefetch thread owns.
struct DataLoader {
    cursor: LmdbCursor,
    transformer: DataTransformer,
    batch_size: usize,
    labels: bool,
}

impl BatchLoader for DataLoader {
    fn load_batch(&mut self) -> Result<Batch> {
        let n = self.batch_size;
        let path = self.cursor.path().to_path_buf();
        let mut records: Vec<(String, Vec<u8>)> = Vec::with_capacity(n);
        self.cursor.read(n, |_, key, value| {
            let what = format!(
                "LMDB {}: record '{}'",
                path.display(),
                String::from_utf8_lossy(key)
            );
            records.push((what, value.to_vec()));
            Ok(())
        })?;
        // Parsing and image decoding run in parallel; the transforms run in record order so
        // the transformer's random draws do not depend on the thread count.
        let mode = self.transformer.decode_mode();
        let parsed: Vec<Result<(Datum, Option<Image>)>> = records
            .par_iter()
            .map(|(what, value)| {
                let datum = decode_datum(value, what)?;
                let image = if datum.encoded() {
                    Some(decode_image(
                        datum.data.as_deref().unwrap_or(&[]),
                        mode,
                        what,
                    )?)
                } else {
                    None
                };
                Ok((datum, image))
            })
            .collect();
        let mut data: Vec<f32> = Vec::new();
        let mut dims = (0, 0, 0);
        let mut label = if self.labels {
            vec![0f32; n]
        } else {
            Vec::new()
        };
        for (i, ((what, _), rec)) in records.iter().zip(parsed).enumerate() {
            let (datum, image) = rec?;
            let raw;
            let pixels = match &image {
                Some(img) => Pixels::Hwc(img),
                None => {
                    raw = self.transformer.datum_pixels(&datum, what)?;
                    raw.pixels()
                }
            };
            if i == 0 {
                // Each batch takes the shape of its first record, as Caffe's load_batch does.
                dims = self
                    .transformer
                    .output_dims(pixels.dims())
                    .with_context(|| what.clone())?;
                data = vec![0f32; n * dims.0 * dims.1 * dims.2];
            }
            let item = dims.0 * dims.1 * dims.2;
            self.transformer
                .transform(&pixels, dims, &mut data[i * item..(i + 1) * item])
                .with_context(|| what.clone())?;
            if !label.is_empty() {
                label[i] = datum.label() as f32;
            }
        }
        Ok(Batch {
            data_shape: vec![n, dims.0, dims.1, dims.2],
            data,
            label,
        })
    }
}

impl Layer for DataLayer {
    fn type_name(&self) -> &'static str {
        "Data"
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
        Arity::Range(1, 2)
    }

    fn setup(&mut self, rng: &mut CaffeRng, _bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.name().to_string();
        let p = self.base.param.data_param.clone().unwrap_or_default();
        let source = p.source().to_string();
        if source.is_empty() {
            bail!("layer '{name}': data_param.source is not set");
        }
        if p.backend() == Db::Leveldb {
            return Err(leveldb_unsupported(&name, &source));
        }
        let batch_size = p.batch_size() as usize;
        if batch_size == 0 {
            bail!("layer '{name}': data_param.batch_size must be positive");
        }
        if p.prefetch() == 0 {
            bail!("layer '{name}': data_param.prefetch must be at least 1");
        }
        let tp = self.base.param.transform_param.clone().unwrap_or_default();
        let mut transformer = DataTransformer::new(&tp, self.base.phase(), &name)?;
        if p.force_encoded_color() {
            transformer.set_force_color();
        }
        transformer.init_rand(rng);

        let mut cursor =
            LmdbCursor::open(&PathBuf::from(&source)).with_context(|| format!("layer '{name}'"))?;
        crate::info!("Opened lmdb {source}");
        if p.rand_skip() > 0 {
            let skip = (rng.next_u32() % p.rand_skip()) as usize;
            crate::info!("Skipping first {skip} data points.");
            cursor.read(skip, |_, _, _| Ok(()))?;
        }
        // The first record shapes the top (read, not consumed).
        let dims = cursor.peek(|key, value| {
            let what = format!("LMDB {source}: record '{}'", String::from_utf8_lossy(key));
            let datum = decode_datum(value, &what)?;
            let px = transformer.datum_pixels(&datum, &what)?;
            transformer
                .output_dims(px.pixels().dims())
                .with_context(|| what.clone())
        })?;
        let shape = [batch_size, dims.0, dims.1, dims.2];
        top[0].reshape(&shape)?;
        crate::info!(
            "output data size: {},{},{},{}",
            shape[0],
            shape[1],
            shape[2],
            shape[3]
        );
        if top.len() > 1 {
            top[1].reshape(&[batch_size])?;
        }
        let loader = DataLoader {
            cursor,
            transformer,
            batch_size,
            labels: top.len() > 1,
        };
        self.prefetch = Some(Prefetcher::start(&name, p.prefetch() as usize, loader)?);
        Ok(())
    }

    fn reshape(&mut self, _bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, _bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let prefetch = self
            .prefetch
            .as_mut()
            .expect("setup starts the prefetch thread");
        let batch = prefetch.next_batch()?;
        top[0].reshape(&batch.data_shape)?;
        top[0].set_data(&batch.data)?;
        if top.len() > 1 {
            top[1].reshape(&[batch.label.len()])?;
            top[1].set_data(&batch.label)?;
        }
        Ok(())
    }

    fn backward(&mut self, _: &mut Ctx, _: &[BlobRef], _: &[bool], _: &[BlobRef]) -> Result<()> {
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        _bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let prefetch = self
            .prefetch
            .as_mut()
            .expect("setup starts the prefetch thread");
        let batch = prefetch.next_batch()?;
        self.upload.put(g, &batch, top)
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

    fn data_wait(&self) -> Option<Duration> {
        self.prefetch.as_ref().map(|p| p.waited())
    }
}
