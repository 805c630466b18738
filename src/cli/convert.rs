//! Dataset tools with Caffe's behaviour: `crema convert mnist` (convert_mnist_data),
//! `crema convert imageset` (convert_imageset) and `crema compute-mean` (compute_image_mean).
//! The LMDBs hold Caffe `Datum` records under Caffe's keys, so real Caffe reads them.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lmdb::{Transaction, WriteFlags};
use prost::Message;

use crate::data::image::{decode_image, read_image_list, resize_linear, ColorMode, Image};
use crate::proto::caffe::{BlobProto, Datum};
use crate::rng::CaffeRng;

/// Creates a new LMDB directory; refuses to overwrite an existing one, as Caffe does.
struct LmdbWriter {
    env: lmdb::Environment,
    db: lmdb::Database,
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    written: usize,
    path: PathBuf,
}

impl LmdbWriter {
    fn create(path: &Path) -> Result<LmdbWriter> {
        if path.exists() {
            bail!(
                "{} already exists; remove it or choose another output path",
                path.display()
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let env = lmdb::Environment::new()
            .set_map_size(1 << 40)
            .open(path)
            .with_context(|| format!("cannot open LMDB {}", path.display()))?;
        let db = env.open_db(None)?;
        Ok(LmdbWriter {
            env,
            db,
            pending: Vec::new(),
            written: 0,
            path: path.to_path_buf(),
        })
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<()> {
        self.pending.push((key.into_bytes(), value));
        if self.pending.len() >= 1000 {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut txn = self.env.begin_rw_txn()?;
        for (k, v) in self.pending.drain(..) {
            txn.put(self.db, &k, &v, WriteFlags::empty())
                .with_context(|| format!("writing to {}", self.path.display()))?;
            self.written += 1;
        }
        txn.commit()?;
        crate::info!("Processed {} files.", self.written);
        Ok(())
    }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: corrupt gzip data", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize, path: &Path) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .with_context(|| format!("{}: truncated IDX header", path.display()))
}

/// MNIST IDX files -> LMDB of Datum{1 x rows x cols, label}, keys `%08d`.
pub fn convert_mnist(images: &Path, labels: &Path, out: &Path) -> Result<usize> {
    let img = read_maybe_gz(images)?;
    let lab = read_maybe_gz(labels)?;
    if be_u32(&img, 0, images)? != 2051 {
        bail!(
            "{}: not an MNIST image file (magic number is not 2051)",
            images.display()
        );
    }
    if be_u32(&lab, 0, labels)? != 2049 {
        bail!(
            "{}: not an MNIST label file (magic number is not 2049)",
            labels.display()
        );
    }
    let n = be_u32(&img, 4, images)? as usize;
    let rows = be_u32(&img, 8, images)? as usize;
    let cols = be_u32(&img, 12, images)? as usize;
    if be_u32(&lab, 4, labels)? as usize != n {
        bail!(
            "{} holds {n} images but {} holds {} labels",
            images.display(),
            labels.display(),
            be_u32(&lab, 4, labels)?
        );
    }
    let need = 16 + n * rows * cols;
    if img.len() < need || lab.len() < 8 + n {
        bail!("{} or {} is truncated", images.display(), labels.display());
    }
    crate::info!("A total of {n} items.");
    crate::info!("Rows: {rows} Cols: {cols}");
    let mut w = LmdbWriter::create(out)?;
    for i in 0..n {
        let px = &img[16 + i * rows * cols..16 + (i + 1) * rows * cols];
        let datum = Datum {
            channels: Some(1),
            height: Some(rows as i32),
            width: Some(cols as i32),
            data: Some(px.to_vec()),
            label: Some(lab[8 + i] as i32),
            ..Default::default()
        };
        w.put(format!("{i:08}"), datum.encode_to_vec())?;
    }
    w.commit()?;
    Ok(n)
}

pub struct ImagesetArgs {
    pub root: PathBuf,
    pub list: PathBuf,
    pub out: PathBuf,
    pub resize_height: usize,
    pub resize_width: usize,
    pub gray: bool,
    pub shuffle: bool,
    pub encoded: bool,
    pub encode_type: String,
    pub check_size: bool,
}

fn encode_image(img: &Image, ext: &str) -> Result<Vec<u8>> {
    // Our Image is BGR (or gray) HWC; encoders want RGB.
    let mut buf = Vec::new();
    let rgb: Vec<u8> = if img.channels == 3 {
        img.data
            .chunks(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect()
    } else {
        img.data.clone()
    };
    let color = if img.channels == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    match ext {
        "png" => image::codecs::png::PngEncoder::new(&mut buf).write_image(
            &rgb,
            img.width as u32,
            img.height as u32,
            color,
        )?,
        "jpg" | "jpeg" => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 95).encode(
            &rgb,
            img.width as u32,
            img.height as u32,
            color,
        )?,
        other => bail!("--encode_type {other}: crema encodes png and jpg"),
    }
    Ok(buf)
}

use image::ImageEncoder;

/// Image list -> LMDB (Caffe's convert_imageset).
pub fn convert_imageset(a: &ImagesetArgs) -> Result<usize> {
    let mut entries = read_image_list(&a.list)?;
    if a.shuffle {
        crate::info!("Shuffling data");
        crate::data::shuffle(&mut entries, &mut CaffeRng::new(0));
    }
    crate::info!("A total of {} images.", entries.len());
    let mode = if a.gray {
        ColorMode::Gray
    } else {
        ColorMode::Color
    };
    let resize = a.resize_height > 0 && a.resize_width > 0;
    let mut w = LmdbWriter::create(&a.out)?;
    let mut first_size: Option<usize> = None;
    for (i, e) in entries.iter().enumerate() {
        let path = a.root.join(&e.path);
        let what = format!(
            "{} (line {} of {})",
            path.display(),
            e.line,
            a.list.display()
        );
        let bytes =
            std::fs::read(&path).with_context(|| format!("Could not open or find file {what}"))?;
        let ext = Path::new(&e.path)
            .extension()
            .and_then(|x| x.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let datum = if a.encoded
            && !resize
            && !a.gray
            && (a.encode_type.is_empty() || a.encode_type == ext)
        {
            // Caffe stores the file itself when nothing would change it.
            decode_image(&bytes, mode, &what)?;
            Datum {
                data: Some(bytes),
                label: Some(e.label),
                encoded: Some(true),
                ..Default::default()
            }
        } else {
            let mut img = decode_image(&bytes, mode, &what)?;
            if resize {
                img = resize_linear(&img, a.resize_height, a.resize_width);
            }
            if a.encoded {
                let t = if a.encode_type.is_empty() {
                    ext.clone()
                } else {
                    a.encode_type.clone()
                };
                Datum {
                    data: Some(encode_image(&img, &t)?),
                    label: Some(e.label),
                    encoded: Some(true),
                    ..Default::default()
                }
            } else {
                Datum {
                    channels: Some(img.channels as i32),
                    height: Some(img.height as i32),
                    width: Some(img.width as i32),
                    data: Some(img.to_chw()),
                    label: Some(e.label),
                    // Caffe's CVMatToDatum writes the flag explicitly.
                    encoded: Some(false),
                    ..Default::default()
                }
            }
        };
        if a.check_size && !a.encoded {
            let n = datum.data.as_ref().map(|d| d.len()).unwrap_or(0);
            match first_size {
                None => first_size = Some(n),
                Some(f) if f != n => {
                    bail!("{what}: image size differs from the first image's ({n} vs {f} bytes)")
                }
                _ => {}
            }
        }
        w.put(format!("{i:08}_{}", e.path), datum.encode_to_vec())?;
    }
    w.commit()?;
    Ok(entries.len())
}

/// Mean image of an LMDB (Caffe's compute_image_mean): a BlobProto with legacy dims
/// (1, C, H, W), accumulated in float in record order.
pub fn compute_mean(lmdb_path: &Path, out: &Path) -> Result<BlobProto> {
    let records = crate::data::lmdb::read_all(lmdb_path)?;
    if records.is_empty() {
        bail!("{}: the database is empty", lmdb_path.display());
    }
    let mut sum: Vec<f32> = Vec::new();
    let mut shape = (0usize, 0usize, 0usize);
    for (n, (key, value)) in records.iter().enumerate() {
        let what = format!(
            "{} record {}",
            lmdb_path.display(),
            String::from_utf8_lossy(key)
        );
        let d = Datum::decode(&value[..]).with_context(|| format!("{what}: not a Datum"))?;
        let (c, h, w, vals): (usize, usize, usize, Vec<f32>) = if d.encoded() {
            let img = decode_image(d.data(), ColorMode::Color, &what)?;
            (
                img.channels,
                img.height,
                img.width,
                img.to_chw().into_iter().map(|v| v as f32).collect(),
            )
        } else {
            let (c, h, w) = (
                d.channels() as usize,
                d.height() as usize,
                d.width() as usize,
            );
            let v: Vec<f32> = if !d.data().is_empty() {
                d.data().iter().map(|&b| b as f32).collect()
            } else {
                d.float_data.clone()
            };
            (c, h, w, v)
        };
        if vals.len() != c * h * w {
            bail!(
                "{what}: holds {} values, its shape {c}x{h}x{w} needs {}",
                vals.len(),
                c * h * w
            );
        }
        if n == 0 {
            shape = (c, h, w);
            sum = vec![0f32; vals.len()];
        } else if shape != (c, h, w) {
            bail!(
                "{what}: shape {c}x{h}x{w} differs from the first record's {}x{}x{}",
                shape.0,
                shape.1,
                shape.2
            );
        }
        for (s, v) in sum.iter_mut().zip(&vals) {
            *s += v;
        }
    }
    let count = records.len() as f32;
    for s in sum.iter_mut() {
        *s /= count;
    }
    let (c, h, w) = shape;
    for ch in 0..c {
        let m: f32 = sum[ch * h * w..(ch + 1) * h * w].iter().sum::<f32>() / (h * w) as f32;
        crate::info!(
            "mean_value channel [{ch}]: {}",
            crate::util::glog::fmt_g(m as f64)
        );
    }
    let blob = BlobProto {
        num: Some(1),
        channels: Some(c as i32),
        height: Some(h as i32),
        width: Some(w as i32),
        data: sum,
        ..Default::default()
    };
    crate::proto::write_binary_atomic(out, &blob)?;
    Ok(blob)
}
