//! Input: tops whose shapes come from `input_param` and whose data is set from outside
//! (deploy nets, tests, `crema time`).

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::blob::BlobRef;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct InputLayer {
    base: LayerBase,
    shapes: Vec<Vec<usize>>,
}

impl InputLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let mut shapes = Vec::new();
        if let Some(p) = &param.input_param {
            for s in &p.shape {
                let mut dims = Vec::new();
                for &d in &s.dim {
                    if d < 0 {
                        bail!("layer '{}': negative input dimension {d}", param.name());
                    }
                    dims.push(d as usize);
                }
                shapes.push(dims);
            }
        }
        Ok(InputLayer {
            base: LayerBase::new(param),
            shapes,
        })
    }
}

impl Layer for InputLayer {
    fn type_name(&self) -> &'static str {
        "Input"
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
        let n = self.shapes.len();
        if n != 0 && n != 1 && n != top.len() {
            bail!(
                "layer '{}': input_param must give 0, 1 or {} shapes (one per top), not {n}",
                self.name(),
                top.len()
            );
        }
        if n > 0 {
            for (i, t) in top.iter().enumerate() {
                let s = if n == 1 {
                    &self.shapes[0]
                } else {
                    &self.shapes[i]
                };
                t.reshape(s)?;
            }
        }
        Ok(())
    }

    fn reshape(&mut self, _bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, _bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
        Ok(())
    }

    fn backward(&mut self, _: &mut Ctx, _: &[BlobRef], _: &[bool], _: &[BlobRef]) -> Result<()> {
        Ok(())
    }
}
