//! Images as Caffe sees them through OpenCV: `cv::imread`/`cv::imdecode` (8-bit, BGR channel
//! order, HWC layout, EXIF orientation applied), `cv::resize` with INTER_LINEAR (OpenCV's 8-bit
//! fixed-point arithmetic, emulated exactly), and ImageData list files.

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// An 8-bit image in OpenCV's layout: rows of pixels, channels interleaved (HWC), colour
/// channels in BGR order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// Which channels a decode produces (OpenCV's imread flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// `IMREAD_COLOR`: always 3 channels (BGR); gray images are replicated.
    Color,
    /// `IMREAD_GRAYSCALE`: always 1 channel.
    Gray,
    /// `IMREAD_ANYCOLOR`: 3 channels for colour images, 1 for gray ones (encoded Datums
    /// without force_color/force_gray).
    Native,
}

impl Image {
    pub fn new(height: usize, width: usize, channels: usize, data: Vec<u8>) -> Image {
        debug_assert_eq!(data.len(), height * width * channels);
        Image {
            height,
            width,
            channels,
            data,
        }
    }

    /// The image as CHW planes (a raw Datum's layout).
    pub fn to_chw(&self) -> Vec<u8> {
        let (h, w, c) = (self.height, self.width, self.channels);
        let mut out = vec![0u8; h * w * c];
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    out[(k * h + y) * w + x] = self.data[(y * w + x) * c + k];
                }
            }
        }
        out
    }
}

/// Gray value of an RGB pixel as libpng's `png_set_rgb_to_gray(1, 0.299, 0.587)` computes it
/// for 8-bit rows (OpenCV's PNG decoder with IMREAD_GRAYSCALE): 15-bit coefficients, truncated.
fn png_gray8(r: u8, g: u8, b: u8) -> u8 {
    if r == g && r == b {
        return r;
    }
    ((PNG_RC * r as u32 + PNG_GC * g as u32 + PNG_BC * b as u32) >> 15) as u8
}

/// The same for 16-bit samples (libpng rounds there), before the strip to 8 bits.
fn png_gray16(r: u16, g: u16, b: u16) -> u16 {
    if r == g && r == b {
        return r;
    }
    ((PNG_RC * r as u32 + PNG_GC * g as u32 + PNG_BC * b as u32 + 16384) >> 15) as u16
}

// libpng: red = 29900 * 32768 / 100000, green = 58700 * 32768 / 100000 (integer division),
// blue = 32768 - red - green.
const PNG_RC: u32 = 9797;
const PNG_GC: u32 = 19234;
const PNG_BC: u32 = 32768 - PNG_RC - PNG_GC;

/// libjpeg's RGB -> gray (`rgb_gray_convert`), for the rare JPEGs stored as RGB or CMYK.
fn jpeg_gray(r: u8, g: u8, b: u8) -> u8 {
    ((19595 * r as u32 + 38470 * g as u32 + 7471 * b as u32 + 32768) >> 16) as u8
}

/// Decodes PNG or JPEG bytes as OpenCV would. `what` names the input in errors.
pub fn decode_image(bytes: &[u8], mode: ColorMode, what: &str) -> Result<Image> {
    let format = image::guess_format(bytes)
        .map_err(|_| anyhow!("{what}: not a PNG or JPEG image (unrecognised file signature)"))?;
    let img = match format {
        ImageFormat::Jpeg => {
            decode_jpeg(bytes, mode).with_context(|| format!("{what}: cannot decode JPEG"))?
        }
        ImageFormat::Png => {
            decode_png(bytes, mode).with_context(|| format!("{what}: cannot decode PNG"))?
        }
        other => bail!("{what}: {other:?} images are not supported (crema reads PNG and JPEG)"),
    };
    if img.height == 0 || img.width == 0 {
        bail!("{what}: the image is empty ({}x{})", img.height, img.width);
    }
    Ok(img)
}

/// Reads an image file (`cv::imread`).
pub fn read_image(path: &Path, mode: ColorMode) -> Result<Image> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("could not open or find file {}", path.display()))?;
    decode_image(&bytes, mode, &path.display().to_string())
}

fn decode_jpeg(bytes: &[u8], mode: ColorMode) -> Result<Image> {
    let is_gray_file = || -> Result<bool> {
        let mut probe =
            zune_jpeg::JpegDecoder::new_with_options(Cursor::new(bytes), zune_options());
        probe.decode_headers().map_err(|e| anyhow!("{e:?}"))?;
        Ok(matches!(probe.input_colorspace(), Some(ColorSpace::Luma)))
    };
    let want_gray = match mode {
        ColorMode::Gray => true,
        ColorMode::Color => false,
        ColorMode::Native => super::jpeg::component_count(bytes)? == 1,
    };
    let (img, exif) = match super::jpeg::decode(bytes, want_gray) {
        Ok(d) => (Image::new(d.height, d.width, d.channels, d.data), d.exif),
        Err(e) if e.downcast_ref::<super::jpeg::Unsupported>().is_some() => {
            // Outside the libjpeg-exact decoder (CMYK, 12-bit, arithmetic coding...): decode
            // with zune-jpeg, which may differ from libjpeg by a few grey levels.
            let want_gray = match mode {
                ColorMode::Native => is_gray_file()?,
                _ => want_gray,
            };
            decode_jpeg_zune(bytes, want_gray)?
        }
        Err(e) => return Err(e),
    };
    let orientation = exif.as_deref().and_then(Orientation::from_exif_chunk);
    Ok(match orientation {
        Some(o) if o != Orientation::NoTransforms => orient(img, o),
        _ => img,
    })
}

fn zune_options() -> DecoderOptions {
    DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX)
}

fn decode_jpeg_zune(bytes: &[u8], want_gray: bool) -> Result<(Image, Option<Vec<u8>>)> {
    let mut probe = zune_jpeg::JpegDecoder::new_with_options(Cursor::new(bytes), zune_options());
    probe.decode_headers().map_err(|e| anyhow!("{e:?}"))?;
    let input = probe
        .input_colorspace()
        .ok_or_else(|| anyhow!("no colour space in the JPEG header"))?;
    let exif = probe.exif().cloned();
    let out_space = match input {
        ColorSpace::Luma => ColorSpace::Luma,
        ColorSpace::YCbCr if want_gray => ColorSpace::Luma,
        ColorSpace::YCbCr => ColorSpace::BGR,
        ColorSpace::RGB | ColorSpace::CMYK | ColorSpace::YCCK => ColorSpace::RGB,
        other => bail!("unsupported JPEG colour space {other:?}"),
    };
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        Cursor::new(bytes),
        zune_options().jpeg_set_out_colorspace(out_space),
    );
    let pixels = dec.decode().map_err(|e| anyhow!("{e:?}"))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| anyhow!("JPEG without dimensions"))?;
    let n = w * h;
    let img = match out_space {
        ColorSpace::Luma => {
            check_len(&pixels, n)?;
            if want_gray {
                Image::new(h, w, 1, pixels)
            } else {
                Image::new(h, w, 3, pixels.iter().flat_map(|&v| [v, v, v]).collect())
            }
        }
        ColorSpace::BGR => {
            check_len(&pixels, 3 * n)?;
            Image::new(h, w, 3, pixels)
        }
        _ => {
            check_len(&pixels, 3 * n)?;
            if want_gray {
                Image::new(
                    h,
                    w,
                    1,
                    pixels
                        .chunks_exact(3)
                        .map(|p| jpeg_gray(p[0], p[1], p[2]))
                        .collect(),
                )
            } else {
                Image::new(
                    h,
                    w,
                    3,
                    pixels
                        .chunks_exact(3)
                        .flat_map(|p| [p[2], p[1], p[0]])
                        .collect(),
                )
            }
        }
    };
    Ok((img, exif))
}

fn check_len(pixels: &[u8], want: usize) -> Result<()> {
    if pixels.len() != want {
        bail!("decoder returned {} bytes for {want} samples", pixels.len());
    }
    Ok(())
}

fn decode_png(bytes: &[u8], mode: ColorMode) -> Result<Image> {
    let reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Png);
    let mut dec = reader.into_decoder()?;
    let orientation = dec.orientation().unwrap_or(Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(dec)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    // Alpha is dropped, not composited (OpenCV strips it); 16-bit samples keep their high
    // byte (libpng's strip_16), after the gray conversion as in libpng's transform order.
    let (src_gray, samples): (bool, Vec<u8>) = match (&img, mode) {
        (DynamicImage::ImageLuma8(b), _) => (true, b.as_raw().clone()),
        (DynamicImage::ImageLumaA8(b), _) => {
            (true, b.as_raw().chunks_exact(2).map(|p| p[0]).collect())
        }
        (DynamicImage::ImageLuma16(b), _) => {
            (true, b.as_raw().iter().map(|&v| (v >> 8) as u8).collect())
        }
        (DynamicImage::ImageLumaA16(b), _) => (
            true,
            b.as_raw()
                .chunks_exact(2)
                .map(|p| (p[0] >> 8) as u8)
                .collect(),
        ),
        (DynamicImage::ImageRgb8(b), ColorMode::Gray) => (
            true,
            b.as_raw()
                .chunks_exact(3)
                .map(|p| png_gray8(p[0], p[1], p[2]))
                .collect(),
        ),
        (DynamicImage::ImageRgba8(b), ColorMode::Gray) => (
            true,
            b.as_raw()
                .chunks_exact(4)
                .map(|p| png_gray8(p[0], p[1], p[2]))
                .collect(),
        ),
        (DynamicImage::ImageRgb16(b), ColorMode::Gray) => (
            true,
            b.as_raw()
                .chunks_exact(3)
                .map(|p| (png_gray16(p[0], p[1], p[2]) >> 8) as u8)
                .collect(),
        ),
        (DynamicImage::ImageRgba16(b), ColorMode::Gray) => (
            true,
            b.as_raw()
                .chunks_exact(4)
                .map(|p| (png_gray16(p[0], p[1], p[2]) >> 8) as u8)
                .collect(),
        ),
        (DynamicImage::ImageRgb8(b), _) => (
            false,
            b.as_raw()
                .chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect(),
        ),
        (DynamicImage::ImageRgba8(b), _) => (
            false,
            b.as_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect(),
        ),
        (DynamicImage::ImageRgb16(b), _) => (
            false,
            b.as_raw()
                .chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]].map(|v| (v >> 8) as u8))
                .collect(),
        ),
        (DynamicImage::ImageRgba16(b), _) => (
            false,
            b.as_raw()
                .chunks_exact(4)
                .flat_map(|p| [p[2], p[1], p[0]].map(|v| (v >> 8) as u8))
                .collect(),
        ),
        (other, _) => bail!("unsupported PNG sample type {:?}", other.color()),
    };
    let img = if src_gray && mode == ColorMode::Color {
        Image::new(h, w, 3, samples.iter().flat_map(|&v| [v, v, v]).collect())
    } else {
        Image::new(h, w, if src_gray { 1 } else { 3 }, samples)
    };
    Ok(if orientation != Orientation::NoTransforms {
        orient(img, orientation)
    } else {
        img
    })
}

/// Applies an EXIF orientation (OpenCV's imread does unless told not to).
fn orient(img: Image, o: Orientation) -> Image {
    let (h, w, c) = (img.height, img.width, img.channels);
    // (source row, source col) for each destination pixel; transposing orientations swap sizes.
    let transpose = matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (oh, ow) = if transpose { (w, h) } else { (h, w) };
    let mut out = vec![0u8; img.data.len()];
    for y in 0..oh {
        for x in 0..ow {
            let (sy, sx) = match o {
                Orientation::NoTransforms => (y, x),
                Orientation::FlipHorizontal => (y, w - 1 - x),
                Orientation::Rotate180 => (h - 1 - y, w - 1 - x),
                Orientation::FlipVertical => (h - 1 - y, x),
                // Clockwise rotation by 90 degrees: destination (y, x) comes from (h-1-x, y).
                Orientation::Rotate90 => (h - 1 - x, y),
                Orientation::Rotate270 => (x, w - 1 - y),
                Orientation::Rotate90FlipH => (x, y),
                Orientation::Rotate270FlipH => (h - 1 - x, w - 1 - y),
            };
            let s = (sy * w + sx) * c;
            let d = (y * ow + x) * c;
            out[d..d + c].copy_from_slice(&img.data[s..s + c]);
        }
    }
    Image::new(oh, ow, c, out)
}

const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// `cv::resize(src, dst, Size(new_w, new_h))` with the default INTER_LINEAR on an 8-bit image,
/// bit for bit: 11-bit fixed-point coefficients, an integer horizontal pass, and the SIMD
/// vertical pass's rounding. An exact 2x downscale is INTER_AREA's 2x2 average, as OpenCV
/// routes it; the same size is a copy.
pub fn resize_linear(src: &Image, new_h: usize, new_w: usize) -> Image {
    let (sh, sw, cn) = (src.height, src.width, src.channels);
    if sh == new_h && sw == new_w {
        return src.clone();
    }
    if sh == 2 * new_h && sw == 2 * new_w {
        return resize_area_2x(src, new_h, new_w);
    }
    let scale_x = 1.0 / (new_w as f64 / sw as f64);
    let scale_y = 1.0 / (new_h as f64 / sh as f64);

    // Horizontal taps per destination column.
    let mut xofs = Vec::with_capacity(new_w);
    let mut xalpha = Vec::with_capacity(new_w);
    for dx in 0..new_w {
        let f = ((dx as f64 + 0.5) * scale_x - 0.5) as f32;
        let mut sx = f.floor() as i64;
        let mut fx = f - sx as f32;
        if sx < 0 {
            sx = 0;
            fx = 0.0;
        }
        if sx >= sw as i64 - 1 {
            sx = sw as i64 - 1;
            fx = 0.0;
        }
        xofs.push(sx as usize);
        xalpha.push((
            round_even((1.0 - fx) * COEF_SCALE),
            round_even(fx * COEF_SCALE),
        ));
    }

    let row_len = new_w * cn;
    let hresize = |y: usize, out: &mut [i32]| {
        let row = &src.data[y * sw * cn..(y + 1) * sw * cn];
        for dx in 0..new_w {
            let sx = xofs[dx];
            let (a0, a1) = xalpha[dx];
            let sx1 = (sx + 1).min(sw - 1);
            for k in 0..cn {
                let s0 = row[sx * cn + k] as i32;
                let s1 = row[sx1 * cn + k] as i32;
                out[dx * cn + k] = a0 * s0 + a1 * s1;
            }
        }
    };

    let mut out = vec![0u8; new_h * row_len];
    let mut r0 = vec![0i32; row_len];
    let mut r1 = vec![0i32; row_len];
    for dy in 0..new_h {
        let f = ((dy as f64 + 0.5) * scale_y - 0.5) as f32;
        let sy = f.floor() as i64;
        let fy = f - sy as f32;
        let y0 = sy.clamp(0, sh as i64 - 1) as usize;
        let y1 = (sy + 1).clamp(0, sh as i64 - 1) as usize;
        let b0 = round_even((1.0 - fy) * COEF_SCALE);
        let b1 = round_even(fy * COEF_SCALE);
        hresize(y0, &mut r0);
        hresize(y1, &mut r1);
        let dst = &mut out[dy * row_len..(dy + 1) * row_len];
        for i in 0..row_len {
            dst[i] = vertical_8u(r0[i], r1[i], b0, b1);
        }
    }
    Image::new(new_h, new_w, cn, out)
}

/// OpenCV's vectorised vertical step (`VResizeLinearVec_32s8u`): rows pre-shifted by 4 and
/// packed to int16, multiplied keeping the high 16 bits, then `(sum + 2) >> 2`, saturated.
#[inline]
fn vertical_8u(r0: i32, r1: i32, b0: i32, b1: i32) -> u8 {
    let s0 = sat_i16(r0 >> 4);
    let s1 = sat_i16(r1 >> 4);
    let t0 = (s0 * b0) >> 16;
    let t1 = (s1 * b1) >> 16;
    let t = sat_i16(sat_i16(t0 + t1) + 2) >> 2;
    t.clamp(0, 255) as u8
}

#[inline]
fn sat_i16(v: i32) -> i32 {
    v.clamp(i16::MIN as i32, i16::MAX as i32)
}

/// `cvRound` of a float: round half to even.
#[inline]
fn round_even(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// INTER_AREA's fast path for an exact factor of 2: the rounded mean of each 2x2 block.
fn resize_area_2x(src: &Image, new_h: usize, new_w: usize) -> Image {
    let (sw, cn) = (src.width, src.channels);
    let mut out = vec![0u8; new_h * new_w * cn];
    for y in 0..new_h {
        let r0 = &src.data[(2 * y) * sw * cn..(2 * y + 1) * sw * cn];
        let r1 = &src.data[(2 * y + 1) * sw * cn..(2 * y + 2) * sw * cn];
        for x in 0..new_w {
            for k in 0..cn {
                let a = 2 * x * cn + k;
                let b = a + cn;
                let s = r0[a] as u32 + r0[b] as u32 + r1[a] as u32 + r1[b] as u32;
                out[(y * new_w + x) * cn + k] = ((s + 2) >> 2) as u8;
            }
        }
    }
    Image::new(new_h, new_w, cn, out)
}

/// One line of an ImageData list file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub path: String,
    pub label: i32,
    /// 1-based line number in the list file, for error messages.
    pub line: usize,
}

/// Reads an ImageData list: each line is `path label`, split at the last space (paths may
/// contain spaces). Blank lines are skipped; a line without a label or with a label that is
/// not an integer is an error naming the list and the line.
pub fn read_image_list(path: &Path) -> Result<Vec<ListEntry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read image list {}", path.display()))?;
    parse_image_list(&text, &path.display().to_string())
}

pub fn parse_image_list(text: &str, list_name: &str) -> Result<Vec<ListEntry>> {
    let mut entries = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        let lineno = i + 1;
        let Some(pos) = line.rfind(' ') else {
            bail!(
                "{list_name}:{lineno}: '{line}' has no label: each line of an ImageData list must be \
                 `path label` (path, one space, integer label)"
            );
        };
        let (p, l) = (&line[..pos], &line[pos + 1..]);
        let label: i32 = l.parse().map_err(|_| {
            anyhow!("{list_name}:{lineno}: label '{l}' is not an integer (line '{line}'; expected `path label`)")
        })?;
        if p.is_empty() {
            bail!("{list_name}:{lineno}: the line has a label but no image path");
        }
        entries.push(ListEntry {
            path: p.to_string(),
            label,
            line: lineno,
        });
    }
    if entries.is_empty() {
        bail!("image list {list_name} is empty");
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_splits_at_last_space_and_reports_missing_labels() {
        let e = parse_image_list("a b/c.png 3\n\nd.jpg -1\r\n", "l.txt").unwrap();
        assert_eq!(
            e[0],
            ListEntry {
                path: "a b/c.png".into(),
                label: 3,
                line: 1
            }
        );
        assert_eq!(
            e[1],
            ListEntry {
                path: "d.jpg".into(),
                label: -1,
                line: 3
            }
        );
        let err = parse_image_list("x.png 1\ny.png\n", "l.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("l.txt:2") && err.contains("no label"), "{err}");
        let err = parse_image_list("x.png one\n", "l.txt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("l.txt:1") && err.contains("not an integer"),
            "{err}"
        );
    }

    #[test]
    fn resize_same_size_is_identity_and_2x_is_area_mean() {
        let img = Image::new(2, 4, 1, vec![0, 10, 20, 31, 1, 3, 5, 7]);
        assert_eq!(resize_linear(&img, 2, 4), img);
        let half = resize_linear(&img, 1, 2);
        // (0+10+1+3+2)>>2 = 4, (20+31+5+7+2)>>2 = 16
        assert_eq!(half.data, vec![4, 16]);
    }

    #[test]
    fn vertical_rounding_matches_simd_formula() {
        // Weights 2048/0 reproduce the source exactly.
        for v in [0u8, 1, 127, 254, 255] {
            let r = v as i32 * 2048;
            assert_eq!(vertical_8u(r, 0, 2048, 0), v);
        }
    }

    #[test]
    fn orientation_rotates_clockwise() {
        // 2x3 image, values = index.
        let img = Image::new(2, 3, 1, vec![0, 1, 2, 3, 4, 5]);
        let r = orient(img.clone(), Orientation::Rotate90);
        assert_eq!((r.height, r.width), (3, 2));
        assert_eq!(r.data, vec![3, 0, 4, 1, 5, 2]);
        let r = orient(img, Orientation::Rotate180);
        assert_eq!(r.data, vec![5, 4, 3, 2, 1, 0]);
    }
}
