//! ImageData: batches of image files named in a list file (`path label` per line), decoded as
//! OpenCV's imread does, optionally resized, transformed on a prefetch thread.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::staging::BatchUpload;
use crate::blob::BlobRef;
use crate::data::image::{read_image, read_image_list, resize_linear, ColorMode, Image, ListEntry};
use crate::data::prefetch::{Batch, BatchLoader, Prefetcher};
use crate::data::shuffle;
use crate::data::transformer::{DataTransformer, Pixels};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

/// Caffe's default prefetch depth (ImageDataParameter has no field for it).
const PREFETCH: usize = 4;

pub struct ImageDataLayer {
    base: LayerBase,
    prefetch: Option<Prefetcher>,
    /// Pinned buffers the batches go to the GPU through (GPU runs only).
    upload: BatchUpload,
}

impl ImageDataLayer {
    pub fn new(param: &LayerParameter) -> Self {
        ImageDataLayer {
            base: LayerBase::new(param),
            prefetch: None,
            upload: BatchUpload::default(),
        }
    }
}

/// Reading one list entry: `root_folder + path`, decoded, resized when asked.
#[derive(Clone)]
struct ImageReader {
    list: String,
    root: String,
    mode: ColorMode,
    resize: Option<(usize, usize)>,
}

impl ImageReader {
    fn load(&self, e: &ListEntry) -> Result<Image> {
        let full = format!("{}{}", self.root, e.path);
        let img = read_image(&PathBuf::from(&full), self.mode)
            .with_context(|| format!("{}:{}: could not load image {full}", self.list, e.line))?;
        Ok(match self.resize {
            Some((h, w)) => resize_linear(&img, h, w),
            None => img,
        })
    }
}

struct ImageLoader {
    reader: ImageReader,
    lines: Vec<ListEntry>,
    pos: usize,
    shuffle_rng: Option<CaffeRng>,
    transformer: DataTransformer,
    batch_size: usize,
    labels: bool,
}

impl BatchLoader for ImageLoader {
    fn load_batch(&mut self) -> Result<Batch> {
        let n = self.batch_size;
        // The entries first (the cursor, wrap-around and reshuffles are sequential), then the
        // files are read, decoded and resized in parallel, then transformed in order (the
        // transformer's random draws stay in a fixed sequence whatever the thread count).
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(self.lines[self.pos].clone());
            self.pos += 1;
            if self.pos >= self.lines.len() {
                self.pos = 0;
                if let Some(rng) = self.shuffle_rng.as_mut() {
                    shuffle(&mut self.lines, rng);
                }
            }
        }
        let reader = &self.reader;
        let images: Vec<Result<Image>> = entries.par_iter().map(|e| reader.load(e)).collect();
        let mut data: Vec<f32> = Vec::new();
        let mut dims = (0, 0, 0);
        let mut label = if self.labels {
            vec![0f32; n]
        } else {
            Vec::new()
        };
        for (i, (e, img)) in entries.iter().zip(images).enumerate() {
            let img = img?;
            let where_ = || {
                format!(
                    "{}:{}: image {}{}",
                    self.reader.list, e.line, self.reader.root, e.path
                )
            };
            let pixels = Pixels::Hwc(&img);
            if i == 0 {
                dims = self
                    .transformer
                    .output_dims(pixels.dims())
                    .with_context(where_)?;
                data = vec![0f32; n * dims.0 * dims.1 * dims.2];
            }
            let item = dims.0 * dims.1 * dims.2;
            self.transformer
                .transform(&pixels, dims, &mut data[i * item..(i + 1) * item])
                .with_context(where_)?;
            if self.labels {
                label[i] = e.label as f32;
            }
        }
        Ok(Batch {
            data_shape: vec![n, dims.0, dims.1, dims.2],
            data,
            label,
        })
    }
}

impl Layer for ImageDataLayer {
    fn type_name(&self) -> &'static str {
        "ImageData"
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
        Arity::Exact(2)
    }

    fn setup(&mut self, rng: &mut CaffeRng, _bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.name().to_string();
        let p = self.base.param.image_data_param.clone().unwrap_or_default();
        let source = p.source().to_string();
        if source.is_empty() {
            bail!("layer '{name}': image_data_param.source is not set");
        }
        let (nh, nw) = (p.new_height() as usize, p.new_width() as usize);
        if (nh == 0) != (nw == 0) {
            bail!(
                "layer '{name}': new_height and new_width must be set together (got {nh} and {nw})"
            );
        }
        let batch_size = p.batch_size() as usize;
        if batch_size == 0 {
            bail!("layer '{name}': image_data_param.batch_size must be positive");
        }
        let tp = self.base.param.transform_param.clone().unwrap_or_default();
        if tp.force_color() || tp.force_gray() {
            crate::warn!(
                "layer '{name}': force_color/force_gray apply only to encoded Datums and have no effect \
                 on ImageData (as in Caffe); image_data_param.is_color chooses color or gray"
            );
        }
        let mut transformer = DataTransformer::new(&tp, self.base.phase(), &name)?;
        transformer.init_rand(rng);

        let mut lines =
            read_image_list(&PathBuf::from(&source)).with_context(|| format!("layer '{name}'"))?;
        let shuffle_rng = if p.shuffle() {
            crate::info!("Shuffling data");
            let mut r = CaffeRng::new(rng.next_u32() as u64);
            shuffle(&mut lines, &mut r);
            Some(r)
        } else {
            None
        };
        crate::info!("A total of {} images.", lines.len());
        let mut pos = 0;
        if p.rand_skip() > 0 {
            let skip = (rng.next_u32() % p.rand_skip()) as usize;
            crate::info!("Skipping first {skip} data points.");
            if skip >= lines.len() {
                bail!(
                    "layer '{name}': not enough images in {source} to skip {skip} (rand_skip {})",
                    p.rand_skip()
                );
            }
            pos = skip;
        }
        let reader = ImageReader {
            list: source.clone(),
            root: p.root_folder().to_string(),
            mode: if p.is_color() {
                ColorMode::Color
            } else {
                ColorMode::Gray
            },
            resize: if nh > 0 { Some((nh, nw)) } else { None },
        };
        // The first image shapes the top.
        let first = reader
            .load(&lines[pos])
            .with_context(|| format!("layer '{name}'"))?;
        let dims = transformer
            .output_dims((first.channels, first.height, first.width))
            .with_context(|| format!("layer '{name}': {}:{}", source, lines[pos].line))?;
        let shape = [batch_size, dims.0, dims.1, dims.2];
        top[0].reshape(&shape)?;
        crate::info!(
            "output data size: {},{},{},{}",
            shape[0],
            shape[1],
            shape[2],
            shape[3]
        );
        top[1].reshape(&[batch_size])?;
        let loader = ImageLoader {
            reader,
            lines,
            pos,
            shuffle_rng,
            transformer,
            batch_size,
            labels: true,
        };
        self.prefetch = Some(Prefetcher::start(&name, PREFETCH, loader)?);
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
        top[1].reshape(&[batch.label.len()])?;
        top[1].set_data(&batch.label)?;
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
