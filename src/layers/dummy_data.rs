//! DummyData: tops of given shapes filled by fillers (none: constant 0; one for all tops; or
//! one per top). Constant-filled tops are filled once at setup; the others are refilled from
//! the net's random source on every forward (Caffe's rule, which spares re-filling constants).

use anyhow::{bail, Context, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::blob::BlobRef;
use crate::filler::fill;
use crate::proto::caffe::{FillerParameter, LayerParameter};
use crate::rng::CaffeRng;

pub struct DummyDataLayer {
    base: LayerBase,
    /// One filler for all tops, or one per top.
    fillers: Vec<FillerParameter>,
}

impl DummyDataLayer {
    pub fn new(param: &LayerParameter) -> Self {
        DummyDataLayer {
            base: LayerBase::new(param),
            fillers: Vec::new(),
        }
    }

    fn filler_for(&self, top: usize) -> &FillerParameter {
        if self.fillers.len() > 1 {
            &self.fillers[top]
        } else {
            &self.fillers[0]
        }
    }
}

fn is_constant(f: &FillerParameter) -> bool {
    f.r#type() == "constant"
}

impl Layer for DummyDataLayer {
    fn type_name(&self) -> &'static str {
        "DummyData"
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

    fn setup(&mut self, _rng: &mut CaffeRng, _bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let p = self.base.param.dummy_data_param.clone().unwrap_or_default();
        let name = self.name().to_string();
        let nt = top.len();
        let nf = p.data_filler.len();
        if nf != 0 && nf != 1 && nf != nt {
            bail!(
                "layer '{name}': Number of data fillers must be 0, 1 or equal to the number of tops: {nt}; you specified {nf} data fillers."
            );
        }
        self.fillers = if nf == 0 {
            vec![FillerParameter {
                r#type: Some("constant".into()),
                value: Some(0.0),
                ..Default::default()
            }]
        } else {
            p.data_filler.clone()
        };
        let legacy = !p.num.is_empty()
            || !p.channels.is_empty()
            || !p.height.is_empty()
            || !p.width.is_empty();
        let pick = |v: &[u32], what: &str, i: usize| -> Result<usize> {
            match v.len() {
                1 => Ok(v[0] as usize),
                n if n == nt => Ok(v[i] as usize),
                n => bail!("layer '{name}': Must specify '{what}' once, or once per top blob ({nt}); specified {n}."),
            }
        };
        for (i, t) in top.iter().enumerate() {
            let shape: Vec<usize> = if legacy {
                if !p.shape.is_empty() {
                    bail!("layer '{name}': Both shape and legacy fields (num, channels, height, width) were specified");
                }
                vec![
                    pick(&p.num, "num", i)?,
                    pick(&p.channels, "channels", i)?,
                    pick(&p.height, "height", i)?,
                    pick(&p.width, "width", i)?,
                ]
            } else {
                let s = match p.shape.len() {
                    1 => &p.shape[0],
                    n if n == nt => &p.shape[i],
                    n => {
                        bail!("layer '{name}': Must specify 'shape' once, or once per top blob ({nt}); specified {n}.")
                    }
                };
                let mut dims = Vec::with_capacity(s.dim.len());
                for &d in &s.dim {
                    if d < 0 {
                        bail!("layer '{name}': negative dimension {d} in shape");
                    }
                    dims.push(d as usize);
                }
                dims
            };
            t.reshape(&shape)
                .with_context(|| format!("layer '{name}', top {i}"))?;
            // Constant tops are filled now, once. The others are filled on every forward; a
            // trial fill here checks their filler against the shape so a bad one fails at
            // setup, then the top goes back to zeros as Caffe's would be until that forward.
            let f = self.filler_for(i);
            fill(t, f, &mut CaffeRng::new(0))
                .with_context(|| format!("layer '{name}', top {i}"))?;
            if !is_constant(f) {
                t.fill_data(0.0);
            }
        }
        Ok(())
    }

    fn reshape(&mut self, _bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
        Ok(())
    }

    fn forward(&mut self, ctx: &mut Ctx, _bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        for (i, t) in top.iter().enumerate() {
            let f = self.filler_for(i);
            if !is_constant(f) {
                fill(t, f, ctx.rng).with_context(|| format!("layer '{}', top {i}", self.name()))?;
            }
        }
        Ok(())
    }

    fn backward(&mut self, _: &mut Ctx, _: &[BlobRef], _: &[bool], _: &[BlobRef]) -> Result<()> {
        Ok(())
    }
}
