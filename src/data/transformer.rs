//! Caffe's DataTransformer: turns one record (a Datum or a decoded image) into CHW floats with
//! `value = (pixel - mean) * scale`, an optional crop (random offsets in TRAIN, centred in
//! TEST) and an optional random mirror (in both phases, as Caffe does).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::image::{decode_image, ColorMode, Image};
use crate::proto::caffe::{Datum, Phase, TransformationParameter};
use crate::rng::CaffeRng;

/// Source pixels of one record, in their native layout.
pub enum Pixels<'a> {
    /// Raw Datum bytes, CHW.
    U8Chw {
        channels: usize,
        height: usize,
        width: usize,
        data: &'a [u8],
    },
    /// Datum float_data, CHW.
    F32Chw {
        channels: usize,
        height: usize,
        width: usize,
        data: &'a [f32],
    },
    /// A decoded image, HWC (OpenCV's Mat).
    Hwc(&'a Image),
}

impl Pixels<'_> {
    /// (channels, height, width).
    pub fn dims(&self) -> (usize, usize, usize) {
        match self {
            Pixels::U8Chw {
                channels,
                height,
                width,
                ..
            }
            | Pixels::F32Chw {
                channels,
                height,
                width,
                ..
            } => (*channels, *height, *width),
            Pixels::Hwc(img) => (img.channels, img.height, img.width),
        }
    }
}

/// A Datum ready to transform: either its own bytes/floats or the image decoded from them.
pub enum DatumPixels<'a> {
    Raw(Pixels<'a>),
    Decoded(Image),
}

impl DatumPixels<'_> {
    pub fn pixels(&self) -> Pixels<'_> {
        match self {
            DatumPixels::Raw(Pixels::U8Chw {
                channels,
                height,
                width,
                data,
            }) => Pixels::U8Chw {
                channels: *channels,
                height: *height,
                width: *width,
                data,
            },
            DatumPixels::Raw(Pixels::F32Chw {
                channels,
                height,
                width,
                data,
            }) => Pixels::F32Chw {
                channels: *channels,
                height: *height,
                width: *width,
                data,
            },
            DatumPixels::Raw(Pixels::Hwc(img)) => Pixels::Hwc(img),
            DatumPixels::Decoded(img) => Pixels::Hwc(img),
        }
    }
}

enum Mean {
    None,
    /// From mean_file: (channels, height, width) and values, indexed at the uncropped position.
    File {
        dims: (usize, usize, usize),
        data: Vec<f32>,
        path: String,
    },
    /// mean_value: one value (all channels) or one per channel.
    Values(Vec<f32>),
}

pub struct DataTransformer {
    layer: String,
    phase: Phase,
    scale: f32,
    mirror: bool,
    crop: usize,
    force_color: bool,
    force_gray: bool,
    mean: Mean,
    rng: Option<CaffeRng>,
    warned_force: bool,
}

impl DataTransformer {
    /// Reads the parameters (and the mean file) for layer `layer` in `phase`.
    pub fn new(
        param: &TransformationParameter,
        phase: Phase,
        layer: &str,
    ) -> Result<DataTransformer> {
        let mean = if let Some(file) = &param.mean_file {
            if !param.mean_value.is_empty() {
                bail!("layer '{layer}': cannot specify mean_file and mean_value at the same time");
            }
            let path = Path::new(file);
            let bp = crate::proto::read_binary_proto_file(path)
                .with_context(|| format!("layer '{layer}': loading mean file {file}"))?;
            let blob = crate::proto::blob::read_blob(&bp)
                .with_context(|| format!("layer '{layer}': mean file {file}"))?;
            // A mean is one image: (1, C, H, W) in legacy files, possibly (C, H, W).
            let s = &blob.shape;
            let dims = match s.len() {
                4 if s[0] == 1 => (s[1], s[2], s[3]),
                3 => (s[0], s[1], s[2]),
                _ => bail!(
                    "layer '{layer}': mean file {file} has shape {}; expected one image (1 x C x H x W)",
                    crate::proto::blob::shape_string(s)
                ),
            };
            Mean::File {
                dims,
                data: blob.data,
                path: file.clone(),
            }
        } else if !param.mean_value.is_empty() {
            Mean::Values(param.mean_value.clone())
        } else {
            Mean::None
        };
        if param.force_color() && param.force_gray() {
            bail!("layer '{layer}': force_color and force_gray cannot both be set");
        }
        Ok(DataTransformer {
            layer: layer.to_string(),
            phase,
            scale: param.scale(),
            mirror: param.mirror(),
            crop: param.crop_size() as usize,
            force_color: param.force_color(),
            force_gray: param.force_gray(),
            mean,
            rng: None,
            warned_force: false,
        })
    }

    /// Whether transforms draw random numbers (mirror, or crop offsets in TRAIN).
    pub fn needs_rand(&self) -> bool {
        self.mirror || (self.phase == Phase::Train && self.crop > 0)
    }

    /// Seeds the transformer's own generator from the net's (Caffe's `InitRand`), only when
    /// it will be used so that other layers' random streams do not shift.
    pub fn init_rand(&mut self, net_rng: &mut CaffeRng) {
        if self.needs_rand() {
            self.rng = Some(CaffeRng::new(net_rng.next_u32() as u64));
        }
    }

    /// Treats DataParameter's deprecated `force_encoded_color` as force_color.
    pub fn set_force_color(&mut self) {
        self.force_color = true;
    }

    /// How encoded Datums are decoded: force_color/force_gray, else as stored.
    pub fn decode_mode(&self) -> ColorMode {
        if self.force_color {
            ColorMode::Color
        } else if self.force_gray {
            ColorMode::Gray
        } else {
            ColorMode::Native
        }
    }

    /// The pixels of a Datum: its raw bytes or floats, or the decoded image if `encoded`.
    /// `what` names the record in errors.
    pub fn datum_pixels<'a>(&mut self, datum: &'a Datum, what: &str) -> Result<DatumPixels<'a>> {
        if datum.encoded() {
            let bytes = datum.data.as_deref().unwrap_or(&[]);
            return Ok(DatumPixels::Decoded(decode_image(
                bytes,
                self.decode_mode(),
                what,
            )?));
        }
        if (self.force_color || self.force_gray) && !self.warned_force {
            self.warned_force = true;
            crate::warn!(
                "layer '{}': force_color and force_gray apply only to encoded Datums; {what} is raw, used as stored",
                self.layer
            );
        }
        let dims = [datum.channels(), datum.height(), datum.width()];
        if dims.iter().any(|&d| d <= 0) {
            bail!(
                "{what}: raw Datum has channels={} height={} width={}; all must be positive",
                dims[0],
                dims[1],
                dims[2]
            );
        }
        let (channels, height, width) = (dims[0] as usize, dims[1] as usize, dims[2] as usize);
        let count = channels * height * width;
        let bytes = datum.data.as_deref().unwrap_or(&[]);
        if !bytes.is_empty() {
            if bytes.len() != count {
                bail!(
                    "{what}: Datum holds {} bytes of data but its shape {channels}x{height}x{width} needs {count}",
                    bytes.len()
                );
            }
            Ok(DatumPixels::Raw(Pixels::U8Chw {
                channels,
                height,
                width,
                data: bytes,
            }))
        } else {
            if datum.float_data.len() != count {
                bail!(
                    "{what}: Datum holds {} float_data values but its shape {channels}x{height}x{width} needs {count}",
                    datum.float_data.len()
                );
            }
            Ok(DatumPixels::Raw(Pixels::F32Chw {
                channels,
                height,
                width,
                data: &datum.float_data,
            }))
        }
    }

    /// (channels, height, width) of the transformed output for a source of `dims`.
    pub fn output_dims(&self, dims: (usize, usize, usize)) -> Result<(usize, usize, usize)> {
        let (c, h, w) = dims;
        if self.crop > 0 {
            if h < self.crop || w < self.crop {
                bail!(
                    "layer '{}': crop_size {} is larger than the {h}x{w} input (height x width)",
                    self.layer,
                    self.crop
                );
            }
            Ok((c, self.crop, self.crop))
        } else {
            Ok((c, h, w))
        }
    }

    fn rand(&mut self, n: usize) -> usize {
        let rng = self
            .rng
            .as_mut()
            .expect("init_rand was called for a transformer that needs random numbers");
        (rng.next_u32() % n as u32) as usize
    }

    /// Writes the transformed record into `out`, whose shape is `out_dims` (the batch's item
    /// shape). Records must have the batch's channels and, unless cropped, its size.
    pub fn transform(
        &mut self,
        src: &Pixels,
        out_dims: (usize, usize, usize),
        out: &mut [f32],
    ) -> Result<()> {
        let (c, h, w) = src.dims();
        let (oc, oh, ow) = out_dims;
        let expected = self.output_dims((c, h, w))?;
        if expected != out_dims {
            bail!(
                "record of shape {c}x{h}x{w} (channels x height x width) does not fit the batch's {oc}x{oh}x{ow}: \
                 every record must have the size of the batch's first record{}",
                if self.crop > 0 { "" } else { " (or use crop_size)" }
            );
        }
        debug_assert_eq!(out.len(), oc * oh * ow);
        let mean_values: Option<Vec<f32>> = match &self.mean {
            Mean::File { dims, path, .. } => {
                if *dims != (c, h, w) {
                    bail!(
                        "layer '{}': the mean file {path} has shape {}x{}x{} (channels x height x width) but the \
                         data has shape {c}x{h}x{w}; the mean must be computed on images of the data's size",
                        self.layer, dims.0, dims.1, dims.2
                    );
                }
                None
            }
            Mean::Values(v) => {
                if v.len() != 1 && v.len() != c {
                    bail!(
                        "layer '{}': specify either 1 mean_value or as many as channels ({c}); {} were given",
                        self.layer,
                        v.len()
                    );
                }
                Some(if v.len() == 1 {
                    vec![v[0]; c]
                } else {
                    v.clone()
                })
            }
            Mean::None => None,
        };
        // Caffe draws the mirror coin before the crop offsets.
        let do_mirror = self.mirror && self.rand(2) == 1;
        let (h_off, w_off) = if self.crop > 0 {
            if self.phase == Phase::Train {
                let a = self.rand(h - self.crop + 1);
                let b = self.rand(w - self.crop + 1);
                (a, b)
            } else {
                ((h - self.crop) / 2, (w - self.crop) / 2)
            }
        } else {
            (0, 0)
        };
        let scale = self.scale;
        let mean_file = match &self.mean {
            Mean::File { data, .. } => Some(data.as_slice()),
            _ => None,
        };
        for k in 0..c {
            for y in 0..oh {
                let sy = y + h_off;
                let row = &mut out[(k * oh + y) * ow..(k * oh + y + 1) * ow];
                for x in 0..ow {
                    let sx = x + w_off;
                    let v = match src {
                        Pixels::U8Chw { data, .. } => data[(k * h + sy) * w + sx] as f32,
                        Pixels::F32Chw { data, .. } => data[(k * h + sy) * w + sx],
                        Pixels::Hwc(img) => img.data[(sy * w + sx) * c + k] as f32,
                    };
                    let v = if let Some(m) = mean_file {
                        (v - m[(k * h + sy) * w + sx]) * scale
                    } else if let Some(m) = &mean_values {
                        (v - m[k]) * scale
                    } else {
                        v * scale
                    };
                    let tx = if do_mirror { ow - 1 - x } else { x };
                    row[tx] = v;
                }
            }
        }
        Ok(())
    }
}

/// Decodes a Datum from LMDB value bytes.
pub fn decode_datum(bytes: &[u8], what: &str) -> Result<Datum> {
    use prost::Message;
    Datum::decode(bytes).map_err(|e| anyhow!("{what}: not a valid Datum ({e})"))
}
