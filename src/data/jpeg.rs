//! A JPEG decoder that reproduces libjpeg-turbo's default output (what OpenCV's imread, and so
//! Caffe, see) bit for bit: the accurate integer IDCT (`jidctint.c`), "fancy" chroma
//! upsampling (`jdsample.c`: h2v1, h1v2, h2v2 triangle filters with libjpeg's rounding and edge
//! replication) and the table-driven YCbCr -> RGB conversion (`jdcolor.c`). Other decoders
//! differ by a few grey levels, more at the right and bottom edges.
//!
//! Baseline, extended (8-bit) and progressive Huffman JPEGs with 1 or 3 components are
//! handled; anything else returns `Unsupported` so the caller can fall back to another decoder.

use anyhow::{anyhow, bail, Result};

/// Raised for valid JPEGs outside what this decoder covers (arithmetic coding, 12-bit,
/// lossless, CMYK, unusual sampling).
#[derive(Debug)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unsupported JPEG: {}", self.0)
    }
}
impl std::error::Error for Unsupported {}

fn unsupported(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Unsupported(msg.into()))
}

/// Decoded output.
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    /// 1 (gray) or 3 (BGR) channels, interleaved.
    pub channels: usize,
    pub data: Vec<u8>,
    /// The EXIF payload (TIFF header onwards), if any.
    pub exif: Option<Vec<u8>>,
}

const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

#[derive(Clone)]
struct Huffman {
    /// (code length, value) lookup for the first 9 bits.
    fast: Vec<(u8, u8)>,
    maxcode: [i32; 18],
    valptr: [i32; 17],
    mincode: [i32; 17],
    values: Vec<u8>,
}

const FAST_BITS: u32 = 9;

impl Huffman {
    fn new(counts: &[u8; 16], values: Vec<u8>) -> Result<Huffman> {
        let mut fast = vec![(0u8, 0u8); 1 << FAST_BITS];
        let mut maxcode = [-1i32; 18];
        let mut valptr = [0i32; 17];
        let mut mincode = [0i32; 17];
        let mut code: i32 = 0;
        let mut k = 0usize;
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            valptr[len] = k as i32;
            mincode[len] = code;
            for _ in 0..n {
                if k >= values.len() {
                    bail!("corrupt Huffman table");
                }
                if len as u32 <= FAST_BITS {
                    let shift = FAST_BITS - len as u32;
                    let base = (code as usize) << shift;
                    for j in 0..(1usize << shift) {
                        if base + j < fast.len() {
                            fast[base + j] = (len as u8, values[k]);
                        }
                    }
                }
                code += 1;
                k += 1;
            }
            maxcode[len] = if n > 0 { code - 1 } else { -1 };
            if code > (1 << len) {
                bail!("corrupt Huffman table (code lengths overflow)");
            }
            code <<= 1;
        }
        maxcode[17] = i32::MAX;
        Ok(Huffman {
            fast,
            maxcode,
            valptr,
            mincode,
            values,
        })
    }
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    bits: u32,
    /// A marker met inside entropy-coded data: zeros are fed from here on (as libjpeg does).
    hit_marker: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        BitReader {
            data,
            pos,
            acc: 0,
            bits: 0,
            hit_marker: false,
        }
    }

    fn fill(&mut self) {
        while self.bits <= 56 {
            let mut byte = 0u8;
            if !self.hit_marker && self.pos < self.data.len() {
                byte = self.data[self.pos];
                if byte == 0xFF {
                    let next = self.data.get(self.pos + 1).copied().unwrap_or(0xD9);
                    if next == 0x00 {
                        self.pos += 2;
                    } else {
                        self.hit_marker = true;
                        byte = 0;
                    }
                } else {
                    self.pos += 1;
                }
            }
            self.acc |= (byte as u64) << (56 - self.bits);
            self.bits += 8;
        }
    }

    fn peek(&mut self, n: u32) -> u32 {
        if self.bits < n {
            self.fill();
        }
        (self.acc >> (64 - n)) as u32
    }

    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.bits -= n;
    }

    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    fn bit(&mut self) -> u32 {
        self.bits(1)
    }

    /// JPEG's signed magnitude category decoding (`HUFF_EXTEND`).
    fn receive_extend(&mut self, s: u32) -> i32 {
        if s == 0 {
            return 0;
        }
        let v = self.bits(s) as i32;
        if v < (1 << (s - 1)) {
            v - (1 << s) + 1
        } else {
            v
        }
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8> {
        let look = self.peek(FAST_BITS) as usize;
        let (len, val) = h.fast[look];
        if len > 0 {
            self.consume(len as u32);
            return Ok(val);
        }
        let code16 = self.peek(16) as i32;
        for len in (FAST_BITS as usize + 1)..=16 {
            let code = code16 >> (16 - len);
            if code <= h.maxcode[len] {
                self.consume(len as u32);
                let idx = h.valptr[len] + code - h.mincode[len];
                return h
                    .values
                    .get(idx as usize)
                    .copied()
                    .ok_or_else(|| anyhow!("corrupt Huffman data"));
            }
        }
        bail!("corrupt JPEG data: bad Huffman code")
    }

    /// Drops buffered bits and skips an RSTn marker (restart interval boundary).
    fn restart(&mut self) {
        self.acc = 0;
        self.bits = 0;
        self.hit_marker = false;
        // Skip to the marker (it may be preceded by fill bytes).
        while self.pos + 1 < self.data.len() {
            if self.data[self.pos] == 0xFF && (0xD0..=0xD7).contains(&self.data[self.pos + 1]) {
                self.pos += 2;
                return;
            }
            if self.data[self.pos] == 0xFF
                && self.data[self.pos + 1] != 0
                && self.data[self.pos + 1] != 0xFF
            {
                // Another marker: leave it for the caller.
                return;
            }
            self.pos += 1;
        }
    }

    /// Position after the scan data (at the next marker).
    fn end_pos(&self) -> usize {
        let mut p = self.pos;
        while p + 1 < self.data.len() {
            if self.data[p] == 0xFF
                && self.data[p + 1] != 0
                && !(0xD0..=0xD7).contains(&self.data[p + 1])
            {
                return p;
            }
            p += 1;
        }
        self.data.len()
    }
}

#[derive(Clone)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    tq: usize,
    /// Blocks per line / column in the allocated (MCU-padded) plane.
    bw: usize,
    bh: usize,
    /// Coefficients, 64 per block, natural order, not dequantized.
    coefs: Vec<i32>,
    dc_table: usize,
    ac_table: usize,
    dc_pred: i32,
}

struct Frame {
    width: usize,
    height: usize,
    progressive: bool,
    comps: Vec<Component>,
    hmax: usize,
    vmax: usize,
    mcux: usize,
    mcuy: usize,
}

pub fn decode(bytes: &[u8], want_gray: bool) -> Result<Decoded> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        bail!("not a JPEG file (no SOI marker)");
    }
    let mut qt = [[0u16; 64]; 4];
    let mut dc_tabs: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac_tabs: [Option<Huffman>; 4] = [None, None, None, None];
    let mut frame: Option<Frame> = None;
    let mut restart_interval = 0usize;
    let mut exif = None;
    let mut jfif = false;
    let mut adobe_transform: Option<u8> = None;
    let mut eobrun = 0u32;
    let mut pos = 2;
    loop {
        // Find the next marker.
        while pos < bytes.len() && bytes[pos] != 0xFF {
            pos += 1;
        }
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        let marker = bytes[pos];
        pos += 1;
        if marker == 0xD9 {
            break;
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            continue;
        }
        if pos + 2 > bytes.len() {
            bail!("truncated JPEG (marker segment)");
        }
        let len = u16::from_be_bytes([bytes[pos], bytes[pos + 1]]) as usize;
        if len < 2 || pos + len > bytes.len() {
            bail!("truncated JPEG (marker 0x{marker:02X} segment)");
        }
        let seg = &bytes[pos + 2..pos + len];
        let seg_end = pos + len;
        match marker {
            0xDB => {
                let mut p = 0;
                while p < seg.len() {
                    let pq = seg[p] >> 4;
                    let tq = (seg[p] & 15) as usize;
                    p += 1;
                    if tq > 3 {
                        bail!("corrupt JPEG: quantization table id {tq}");
                    }
                    for k in 0..64 {
                        let v = if pq == 0 {
                            seg.get(p + k).copied().map(|b| b as u16)
                        } else {
                            seg.get(p + 2 * k..p + 2 * k + 2)
                                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                        };
                        qt[tq][ZIGZAG[k]] =
                            v.ok_or_else(|| anyhow!("truncated quantization table"))?;
                    }
                    p += if pq == 0 { 64 } else { 128 };
                }
            }
            0xC4 => {
                let mut p = 0;
                while p < seg.len() {
                    let tc = seg[p] >> 4;
                    let th = (seg[p] & 15) as usize;
                    if th > 3 || tc > 1 {
                        bail!("corrupt JPEG: Huffman table class {tc} id {th}");
                    }
                    let counts: [u8; 16] = seg
                        .get(p + 1..p + 17)
                        .ok_or_else(|| anyhow!("truncated Huffman table"))?
                        .try_into()
                        .unwrap();
                    let n: usize = counts.iter().map(|&c| c as usize).sum();
                    let vals = seg
                        .get(p + 17..p + 17 + n)
                        .ok_or_else(|| anyhow!("truncated Huffman table"))?
                        .to_vec();
                    let t = Huffman::new(&counts, vals)?;
                    if tc == 0 {
                        dc_tabs[th] = Some(t);
                    } else {
                        ac_tabs[th] = Some(t);
                    }
                    p += 17 + n;
                }
            }
            0xDD => {
                if seg.len() < 2 {
                    bail!("corrupt JPEG: DRI segment");
                }
                restart_interval = u16::from_be_bytes([seg[0], seg[1]]) as usize;
            }
            0xE0 if seg.starts_with(b"JFIF\0") => {
                jfif = true;
            }
            0xE1 if seg.starts_with(b"Exif\0\0") && exif.is_none() => {
                exif = Some(seg[6..].to_vec());
            }
            0xEE if seg.starts_with(b"Adobe") && seg.len() >= 12 => {
                adobe_transform = Some(seg[11]);
            }
            0xC0..=0xC2 => {
                if frame.is_some() {
                    bail!("corrupt JPEG: several frames");
                }
                if seg.len() < 6 {
                    bail!("corrupt JPEG: SOF segment");
                }
                if seg[0] != 8 {
                    return Err(unsupported(format!("{}-bit samples", seg[0])));
                }
                let height = u16::from_be_bytes([seg[1], seg[2]]) as usize;
                let width = u16::from_be_bytes([seg[3], seg[4]]) as usize;
                let nc = seg[5] as usize;
                if height == 0 {
                    return Err(unsupported("height defined by a DNL marker"));
                }
                if width == 0 {
                    bail!("corrupt JPEG: zero width");
                }
                if nc != 1 && nc != 3 {
                    return Err(unsupported(format!("{nc} components")));
                }
                if seg.len() < 6 + 3 * nc {
                    bail!("corrupt JPEG: SOF segment");
                }
                let mut comps = Vec::new();
                for i in 0..nc {
                    let c = &seg[6 + 3 * i..9 + 3 * i];
                    let (h, v) = ((c[1] >> 4) as usize, (c[1] & 15) as usize);
                    if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
                        bail!("corrupt JPEG: component sampling {h}x{v}");
                    }
                    comps.push(Component {
                        id: c[0],
                        h,
                        v,
                        tq: c[2] as usize,
                        bw: 0,
                        bh: 0,
                        coefs: Vec::new(),
                        dc_table: 0,
                        ac_table: 0,
                        dc_pred: 0,
                    });
                }
                let hmax = comps.iter().map(|c| c.h).max().unwrap();
                let vmax = comps.iter().map(|c| c.v).max().unwrap();
                let mcux = width.div_ceil(8 * hmax);
                let mcuy = height.div_ceil(8 * vmax);
                if nc == 1 {
                    // A single component is never interleaved: its block grid is its own size.
                    comps[0].h = 1;
                    comps[0].v = 1;
                }
                for c in comps.iter_mut() {
                    c.bw = mcux * c.h;
                    c.bh = mcuy * c.v;
                    if nc == 1 {
                        c.bw = width.div_ceil(8);
                        c.bh = height.div_ceil(8);
                    }
                    let n =
                        c.bw.checked_mul(c.bh)
                            .and_then(|n| n.checked_mul(64))
                            .ok_or_else(|| anyhow!("JPEG too large"))?;
                    // A corrupt header must not turn into a huge allocation.
                    if n > (1 << 28) {
                        bail!("JPEG too large ({width}x{height}) for crema's decoder");
                    }
                    c.coefs = vec![0; n];
                }
                let (hmax, vmax) = if nc == 1 { (1, 1) } else { (hmax, vmax) };
                frame = Some(Frame {
                    width,
                    height,
                    progressive: marker == 0xC2,
                    comps,
                    hmax,
                    vmax,
                    mcux: width.div_ceil(8 * hmax),
                    mcuy: height.div_ceil(8 * vmax),
                });
            }
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(unsupported(format!(
                    "SOF{} (lossless, hierarchical or arithmetic coding)",
                    marker - 0xC0
                )));
            }
            0xDA => {
                let f = frame
                    .as_mut()
                    .ok_or_else(|| anyhow!("corrupt JPEG: scan before frame header"))?;
                if seg.is_empty() {
                    bail!("corrupt JPEG: SOS segment");
                }
                let ns = seg[0] as usize;
                if ns == 0 || ns > 4 || seg.len() < 1 + 2 * ns + 3 {
                    bail!("corrupt JPEG: SOS segment");
                }
                let mut scomps = Vec::new();
                for i in 0..ns {
                    let id = seg[1 + 2 * i];
                    let t = seg[2 + 2 * i];
                    let ci = f.comps.iter().position(|c| c.id == id).ok_or_else(|| {
                        anyhow!("corrupt JPEG: scan names unknown component {id}")
                    })?;
                    f.comps[ci].dc_table = (t >> 4) as usize & 3;
                    f.comps[ci].ac_table = (t & 15) as usize & 3;
                    scomps.push(ci);
                }
                let ss = seg[1 + 2 * ns] as usize;
                let se = seg[2 + 2 * ns] as usize;
                let ah = (seg[3 + 2 * ns] >> 4) as u32;
                let al = (seg[3 + 2 * ns] & 15) as u32;
                if se > 63 || ss > se {
                    bail!("corrupt JPEG: spectral selection {ss}..{se}");
                }
                let mut br = BitReader::new(bytes, seg_end);
                decode_scan(
                    f,
                    &scomps,
                    &dc_tabs,
                    &ac_tabs,
                    restart_interval,
                    (ss, se, ah, al),
                    &mut br,
                    &mut eobrun,
                )?;
                pos = br.end_pos();
                continue;
            }
            _ => {}
        }
        pos = seg_end;
    }
    let f = frame.ok_or_else(|| anyhow!("corrupt JPEG: no frame"))?;
    // libjpeg's colour-space guess for 3 components.
    let rgb = if f.comps.len() == 3 {
        if jfif {
            false
        } else if let Some(t) = adobe_transform {
            t == 0
        } else {
            let ids: Vec<u8> = f.comps.iter().map(|c| c.id).collect();
            ids == [b'R', b'G', b'B']
        }
    } else {
        false
    };
    let planes: Vec<Plane> = f
        .comps
        .iter()
        .map(|c| idct_component(c, &qt[c.tq]))
        .collect();
    let (w, h) = (f.width, f.height);
    if f.comps.len() == 1 {
        let p = &planes[0];
        let mut gray = Vec::with_capacity(w * h);
        for y in 0..h {
            gray.extend_from_slice(&p.data[y * p.stride..y * p.stride + w]);
        }
        let (channels, data) = if want_gray {
            (1, gray)
        } else {
            (3, gray.iter().flat_map(|&v| [v, v, v]).collect())
        };
        return Ok(Decoded {
            width: w,
            height: h,
            channels,
            data,
            exif,
        });
    }
    let full: Vec<Plane> = f
        .comps
        .iter()
        .zip(planes)
        .map(|(c, p)| upsample(p, c, &f))
        .collect::<Result<_>>()?;
    let px = |k: usize, y: usize, x: usize| full[k].data[y * full[k].stride + x];
    if want_gray && !rgb {
        // libjpeg hands the luma plane itself to a gray output.
        let mut out = Vec::with_capacity(w * h);
        for y in 0..h {
            out.extend_from_slice(&full[0].data[y * full[0].stride..y * full[0].stride + w]);
        }
        return Ok(Decoded {
            width: w,
            height: h,
            channels: 1,
            data: out,
            exif,
        });
    }
    let tabs = ColorTables::new();
    let mut out = Vec::with_capacity(w * h * if want_gray { 1 } else { 3 });
    for y in 0..h {
        for x in 0..w {
            let (a, b, c) = (px(0, y, x), px(1, y, x), px(2, y, x));
            let (r, g, bl) = if rgb {
                (a, b, c)
            } else {
                tabs.ycc_to_rgb(a, b, c)
            };
            if want_gray {
                out.push(
                    ((19595 * r as u32 + 38470 * g as u32 + 7471 * bl as u32 + 32768) >> 16) as u8,
                );
            } else {
                out.extend_from_slice(&[bl, g, r]);
            }
        }
    }
    Ok(Decoded {
        width: w,
        height: h,
        channels: if want_gray { 1 } else { 3 },
        data: out,
        exif,
    })
}

#[allow(clippy::too_many_arguments)]
fn decode_scan(
    f: &mut Frame,
    scomps: &[usize],
    dc_tabs: &[Option<Huffman>; 4],
    ac_tabs: &[Option<Huffman>; 4],
    restart_interval: usize,
    (ss, se, ah, al): (usize, usize, u32, u32),
    br: &mut BitReader,
    eobrun: &mut u32,
) -> Result<()> {
    let progressive = f.progressive;
    if progressive && ss == 0 && se != 0 {
        bail!("corrupt JPEG: progressive DC scan with AC coefficients");
    }
    if progressive && ss > 0 && scomps.len() != 1 {
        bail!("corrupt JPEG: progressive AC scan with several components");
    }
    // Sequential scans carry the whole spectrum whatever Ss/Se/Ah/Al say (libjpeg ignores them).
    let need_dc = !progressive || (ss == 0 && ah == 0);
    let need_ac = !progressive || ss > 0;
    for &ci in scomps {
        let c = &f.comps[ci];
        if need_dc && dc_tabs[c.dc_table].is_none() {
            bail!("corrupt JPEG: missing DC Huffman table {}", c.dc_table);
        }
        if need_ac && ac_tabs[c.ac_table].is_none() {
            bail!("corrupt JPEG: missing AC Huffman table {}", c.ac_table);
        }
    }
    for &ci in scomps {
        f.comps[ci].dc_pred = 0;
    }
    *eobrun = 0;
    // Blocks visited: interleaved scans go MCU by MCU; a single-component scan covers the
    // component's own block grid (ceil of its sample size), not the MCU-padded one.
    let units: Vec<(usize, usize, usize)> = if scomps.len() == 1 {
        let ci = scomps[0];
        let c = &f.comps[ci];
        let cw = (f.width * c.h).div_ceil(f.hmax).div_ceil(8);
        let ch = (f.height * c.v).div_ceil(f.vmax).div_ceil(8);
        let mut u = Vec::with_capacity(cw * ch);
        for by in 0..ch {
            for bx in 0..cw {
                u.push((ci, by, bx));
            }
        }
        u
    } else {
        let mut u = Vec::new();
        for my in 0..f.mcuy {
            for mx in 0..f.mcux {
                for &ci in scomps {
                    let c = &f.comps[ci];
                    for v in 0..c.v {
                        for h in 0..c.h {
                            u.push((ci, my * c.v + v, mx * c.h + h));
                        }
                    }
                }
            }
        }
        u
    };
    let blocks_per_mcu = if scomps.len() == 1 {
        1
    } else {
        scomps.iter().map(|&ci| f.comps[ci].h * f.comps[ci].v).sum()
    };
    let mut mcu_count = 0usize;
    for (i, &(ci, by, bx)) in units.iter().enumerate() {
        if i % blocks_per_mcu == 0 {
            if restart_interval > 0 && mcu_count > 0 && mcu_count.is_multiple_of(restart_interval) {
                br.restart();
                for &cj in scomps {
                    f.comps[cj].dc_pred = 0;
                }
                *eobrun = 0;
            }
            mcu_count += 1;
        }
        let c = &mut f.comps[ci];
        let bw = c.bw;
        let off = (by * bw + bx) * 64;
        let dc_t = c.dc_table;
        let ac_t = c.ac_table;
        let mut pred = c.dc_pred;
        let blk = &mut c.coefs[off..off + 64];
        if !progressive {
            let t = br.decode(dc_tabs[dc_t].as_ref().unwrap())? as u32;
            if t > 16 {
                bail!("corrupt JPEG: DC magnitude category {t}");
            }
            pred = pred.wrapping_add(br.receive_extend(t));
            blk[0] = pred;
            let ac = ac_tabs[ac_t].as_ref().unwrap();
            let mut k = 1;
            while k < 64 {
                let rs = br.decode(ac)?;
                let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
                if s == 0 {
                    if r != 15 {
                        break;
                    }
                    k += 16;
                    continue;
                }
                k += r;
                if k > 63 {
                    bail!("corrupt JPEG: AC coefficient index past 63");
                }
                blk[ZIGZAG[k]] = br.receive_extend(s);
                k += 1;
            }
        } else if ss == 0 {
            if ah == 0 {
                let t = br.decode(dc_tabs[dc_t].as_ref().unwrap())? as u32;
                if t > 16 {
                    bail!("corrupt JPEG: DC magnitude category {t}");
                }
                pred = pred.wrapping_add(br.receive_extend(t));
                blk[0] = pred.wrapping_shl(al);
            } else if br.bit() != 0 {
                blk[0] |= 1 << al;
            }
        } else if ah == 0 {
            ac_first(
                br,
                ac_tabs[ac_t]
                    .as_ref()
                    .ok_or_else(|| anyhow!("corrupt JPEG: missing AC table"))?,
                blk,
                ss,
                se,
                al,
                eobrun,
            )?;
        } else {
            ac_refine(
                br,
                ac_tabs[ac_t]
                    .as_ref()
                    .ok_or_else(|| anyhow!("corrupt JPEG: missing AC table"))?,
                blk,
                ss,
                se,
                al,
                eobrun,
            )?;
        }
        f.comps[ci].dc_pred = pred;
    }
    Ok(())
}

fn ac_first(
    br: &mut BitReader,
    ac: &Huffman,
    blk: &mut [i32],
    ss: usize,
    se: usize,
    al: u32,
    eobrun: &mut u32,
) -> Result<()> {
    if *eobrun > 0 {
        *eobrun -= 1;
        return Ok(());
    }
    let mut k = ss;
    while k <= se {
        let rs = br.decode(ac)?;
        let (r, s) = ((rs >> 4) as u32, (rs & 15) as u32);
        if s == 0 {
            if r < 15 {
                *eobrun = (1 << r) - 1;
                if r > 0 {
                    *eobrun += br.bits(r);
                }
                break;
            }
            k += 16;
            continue;
        }
        k += r as usize;
        if k > 63 {
            bail!("corrupt JPEG: AC coefficient index past 63");
        }
        blk[ZIGZAG[k]] = br.receive_extend(s).wrapping_shl(al);
        k += 1;
    }
    Ok(())
}

fn ac_refine(
    br: &mut BitReader,
    ac: &Huffman,
    blk: &mut [i32],
    ss: usize,
    se: usize,
    al: u32,
    eobrun: &mut u32,
) -> Result<()> {
    let p1 = 1i32 << al;
    let m1 = -1i32 << al;
    let mut k = ss;
    if *eobrun == 0 {
        while k <= se {
            let rs = br.decode(ac)?;
            let (mut r, s) = ((rs >> 4) as i32, (rs & 15) as u32);
            let mut value = 0;
            if s == 0 {
                if r < 15 {
                    *eobrun = 1 << r;
                    if r > 0 {
                        *eobrun += br.bits(r as u32);
                    }
                    break;
                }
            } else {
                if s != 1 {
                    bail!("corrupt JPEG: bad refinement magnitude");
                }
                value = if br.bit() != 0 { p1 } else { m1 };
            }
            while k <= se {
                let z = ZIGZAG[k];
                if blk[z] != 0 {
                    if br.bit() != 0 && (blk[z] & p1) == 0 {
                        blk[z] += if blk[z] >= 0 { p1 } else { m1 };
                    }
                } else {
                    if r == 0 {
                        if value != 0 {
                            blk[z] = value;
                        }
                        k += 1;
                        break;
                    }
                    r -= 1;
                }
                k += 1;
            }
        }
    }
    if *eobrun > 0 {
        while k <= se {
            let z = ZIGZAG[k];
            if blk[z] != 0 && br.bit() != 0 && (blk[z] & p1) == 0 {
                blk[z] += if blk[z] >= 0 { p1 } else { m1 };
            }
            k += 1;
        }
        *eobrun -= 1;
    }
    Ok(())
}

struct Plane {
    stride: usize,
    data: Vec<u8>,
}

/// libjpeg's post-IDCT range limit: `range_limit[x & 1023]` around CENTERJSAMPLE.
#[inline]
fn range_limit(x: i32) -> u8 {
    let i = (x & 1023) as u32;
    if i < 128 {
        (i + 128) as u8
    } else if i < 512 {
        255
    } else if i < 896 {
        0
    } else {
        (i - 896) as u8
    }
}

const CONST_BITS: i32 = 13;
const PASS1_BITS: i32 = 2;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

#[inline]
fn descale(x: i64, n: i32) -> i64 {
    (x + (1i64 << (n - 1))) >> n
}

/// One 1-D pass of `jpeg_idct_islow` on 8 values; returns the 8 outputs before descaling.
#[inline]
fn idct_1d(i: [i64; 8]) -> [i64; 8] {
    let (z2, z3) = (i[2], i[6]);
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (i[0] + i[4]) << CONST_BITS;
    let tmp1 = (i[0] - i[4]) << CONST_BITS;
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;

    let (mut t0, mut t1, mut t2, mut t3) = (i[7], i[5], i[3], i[1]);
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    t0 *= FIX_0_298631336;
    t1 *= FIX_2_053119869;
    t2 *= FIX_3_072711026;
    t3 *= FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    t0 += z1 + z3;
    t1 += z2 + z4;
    t2 += z2 + z3;
    t3 += z1 + z4;
    [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ]
}

/// Dequantizes and inverse-transforms every block of a component into its sample plane.
fn idct_component(c: &Component, q: &[u16; 64]) -> Plane {
    let stride = c.bw * 8;
    let rows = c.bh * 8;
    let mut data = vec![0u8; stride * rows];
    let mut ws = [0i64; 64];
    for by in 0..c.bh {
        for bx in 0..c.bw {
            let blk = &c.coefs[(by * c.bw + bx) * 64..(by * c.bw + bx + 1) * 64];
            // Pass 1: columns.
            for col in 0..8 {
                let inp: [i64; 8] =
                    std::array::from_fn(|r| blk[r * 8 + col] as i64 * q[r * 8 + col] as i64);
                let out = idct_1d(inp);
                for r in 0..8 {
                    ws[r * 8 + col] = descale(out[r], CONST_BITS - PASS1_BITS);
                }
            }
            // Pass 2: rows.
            for r in 0..8 {
                let inp: [i64; 8] = std::array::from_fn(|k| ws[r * 8 + k]);
                let out = idct_1d(inp);
                let dst =
                    &mut data[(by * 8 + r) * stride + bx * 8..(by * 8 + r) * stride + bx * 8 + 8];
                for k in 0..8 {
                    dst[k] = range_limit(descale(out[k], CONST_BITS + PASS1_BITS + 3) as i32);
                }
            }
        }
    }
    Plane { stride, data }
}

/// Brings a component plane to full resolution as libjpeg-turbo's upsampler does.
fn upsample(p: Plane, c: &Component, f: &Frame) -> Result<Plane> {
    let (hf, vf) = (f.hmax / c.h, f.vmax / c.v);
    if !f.hmax.is_multiple_of(c.h) || !f.vmax.is_multiple_of(c.v) {
        return Err(unsupported(format!(
            "fractional sampling factors {}x{} of {}x{}",
            c.h, c.v, f.hmax, f.vmax
        )));
    }
    if hf == 1 && vf == 1 {
        return Ok(p);
    }
    // Real samples of this component (the rest of the plane is block padding).
    let dw = (f.width * c.h).div_ceil(f.hmax);
    let dh = (f.height * c.v).div_ceil(f.vmax);
    let ow = dw * hf;
    let oh = dh * vf;
    let row = |y: isize| -> &[u8] {
        let y = y.clamp(0, dh as isize - 1) as usize;
        &p.data[y * p.stride..y * p.stride + dw]
    };
    let mut out = vec![0u8; ow * oh];
    match (hf, vf) {
        (2, 1) if dw > 2 => {
            for y in 0..dh {
                let src = row(y as isize);
                h2v1_fancy(src, &mut out[y * ow..(y + 1) * ow]);
            }
        }
        (1, 2) => {
            for y in 0..dh {
                let src = row(y as isize);
                for (v, (near_off, bias)) in [(-1isize, 1u32), (1, 2)].into_iter().enumerate() {
                    let far = row(y as isize + near_off);
                    let dst = &mut out[(2 * y + v) * ow..(2 * y + v + 1) * ow];
                    for x in 0..dw {
                        dst[x] = ((src[x] as u32 * 3 + far[x] as u32 + bias) >> 2) as u8;
                    }
                }
            }
        }
        (2, 2) if dw > 2 => {
            for y in 0..dh {
                let src = row(y as isize);
                for (v, near_off) in [-1isize, 1].into_iter().enumerate() {
                    let far = row(y as isize + near_off);
                    let dst = &mut out[(2 * y + v) * ow..(2 * y + v + 1) * ow];
                    h2v2_fancy_row(src, far, dst);
                }
            }
        }
        _ => {
            // Box replication (`int_upsample`, and h2v1/h2v2 for images 2 samples wide).
            for y in 0..oh {
                let src = row((y / vf) as isize);
                for x in 0..ow {
                    out[y * ow + x] = src[x / hf];
                }
            }
        }
    }
    Ok(Plane {
        stride: ow,
        data: out,
    })
}

fn h2v1_fancy(src: &[u8], dst: &mut [u8]) {
    let n = src.len();
    let s = |i: usize| src[i] as u32;
    dst[0] = src[0];
    dst[1] = ((s(0) * 3 + s(1) + 2) >> 2) as u8;
    for i in 1..n - 1 {
        let v = s(i) * 3;
        dst[2 * i] = ((v + s(i - 1) + 1) >> 2) as u8;
        dst[2 * i + 1] = ((v + s(i + 1) + 2) >> 2) as u8;
    }
    dst[2 * n - 2] = ((s(n - 1) * 3 + s(n - 2) + 1) >> 2) as u8;
    dst[2 * n - 1] = src[n - 1];
}

fn h2v2_fancy_row(near: &[u8], far: &[u8], dst: &mut [u8]) {
    let n = near.len();
    let col = |i: usize| near[i] as u32 * 3 + far[i] as u32;
    let mut this = col(0);
    let mut next = col(1);
    dst[0] = ((this * 4 + 8) >> 4) as u8;
    dst[1] = ((this * 3 + next + 7) >> 4) as u8;
    let mut last = this;
    this = next;
    for i in 1..n - 1 {
        next = col(i + 1);
        dst[2 * i] = ((this * 3 + last + 8) >> 4) as u8;
        dst[2 * i + 1] = ((this * 3 + next + 7) >> 4) as u8;
        last = this;
        this = next;
    }
    dst[2 * n - 2] = ((this * 3 + last + 8) >> 4) as u8;
    dst[2 * n - 1] = ((this * 4 + 7) >> 4) as u8;
}

/// `jdcolor.c`'s YCbCr -> RGB tables.
struct ColorTables {
    cr_r: [i32; 256],
    cb_b: [i32; 256],
    cr_g: [i64; 256],
    cb_g: [i64; 256],
}

impl ColorTables {
    fn new() -> Self {
        const SCALEBITS: i64 = 16;
        const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
        let fix = |x: f64| (x * (1i64 << SCALEBITS) as f64 + 0.5) as i64;
        let mut t = ColorTables {
            cr_r: [0; 256],
            cb_b: [0; 256],
            cr_g: [0; 256],
            cb_g: [0; 256],
        };
        for i in 0..256 {
            let x = i as i64 - 128;
            t.cr_r[i] = ((fix(1.40200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cb_b[i] = ((fix(1.77200) * x + ONE_HALF) >> SCALEBITS) as i32;
            t.cr_g[i] = -fix(0.71414) * x;
            t.cb_g[i] = -fix(0.34414) * x + ONE_HALF;
        }
        t
    }

    #[inline]
    fn ycc_to_rgb(&self, y: u8, cb: u8, cr: u8) -> (u8, u8, u8) {
        let y = y as i32;
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        let r = clamp(y + self.cr_r[cr as usize]);
        let g = clamp(y + ((self.cb_g[cb as usize] + self.cr_g[cr as usize]) >> 16) as i32);
        let b = clamp(y + self.cb_b[cb as usize]);
        (r, g, b)
    }
}

/// Number of components in the frame header (to choose gray or colour for IMREAD_ANYCOLOR).
pub fn component_count(bytes: &[u8]) -> Result<usize> {
    let mut pos = 2;
    while pos + 4 <= bytes.len() {
        if bytes[pos] != 0xFF {
            pos += 1;
            continue;
        }
        let marker = bytes[pos + 1];
        if marker == 0xFF || marker == 0x01 || (0xD0..=0xD8).contains(&marker) {
            pos += if marker == 0xFF { 1 } else { 2 };
            continue;
        }
        let len = u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]) as usize;
        if matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            return bytes
                .get(pos + 9)
                .map(|&n| n as usize)
                .ok_or_else(|| anyhow!("truncated JPEG frame header"));
        }
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        pos += 2 + len;
    }
    bail!("corrupt JPEG: no frame header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_limit_matches_libjpeg_table() {
        assert_eq!(range_limit(0), 128);
        assert_eq!(range_limit(127), 255);
        assert_eq!(range_limit(300), 255);
        assert_eq!(range_limit(-128), 0);
        assert_eq!(range_limit(-1), 127);
        assert_eq!(range_limit(-300), 0);
    }

    #[test]
    fn corrupt_inputs_are_errors_not_panics() {
        for name in ["progressive.jpg", "restart.jpg", "s422.jpg"] {
            let path = format!("{}/tests/data/jpeg/{name}", env!("CARGO_MANIFEST_DIR"));
            fuzz(&std::fs::read(path).unwrap());
        }
        assert!(decode(b"not a jpeg", false).is_err());
    }

    fn fuzz(good: &[u8]) {
        assert!(decode(good, false).is_ok());
        // Truncations and flipped bytes anywhere: any result but a panic.
        for cut in (0..good.len()).step_by(37) {
            let _ = decode(&good[..cut], false);
        }
        for i in (2..good.len()).step_by(7) {
            let mut bad = good.to_vec();
            bad[i] ^= 0x5A;
            let _ = decode(&bad, false);
            let _ = decode(&bad, true);
        }
    }
}
