//! Crop: cuts bottom 0 to bottom 1's shape on the axes from `axis` on (default 2), at `offset`
//! (one value for all cropped axes, or one per cropped axis; default 0). Backward writes the
//! top diff into the window and zeros elsewhere; bottom 1 only gives a shape (zero gradient).

use anyhow::{anyhow, bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::tensor;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct CropLayer {
    base: LayerBase,
    offsets: Vec<usize>,
}

impl CropLayer {
    pub fn new(param: &LayerParameter) -> Self {
        CropLayer {
            base: LayerBase::new(param),
            offsets: Vec::new(),
        }
    }
}

impl Layer for CropLayer {
    fn type_name(&self) -> &'static str {
        "Crop"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if bottom.iter().any(|b| std::rc::Rc::ptr_eq(b, &top[0])) {
            bail!("layer '{}': Crop does not work in place", self.name());
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let p = self.base.param.crop_param.clone().unwrap_or_default();
        let (a, b) = (&bottom[0], &bottom[1]);
        let nd = a.num_axes();
        if nd != b.num_axes() {
            bail!(
                "layer '{}': Crop bottoms must have the same number of axes: {} vs {}",
                self.name(),
                a.shape_string(),
                b.shape_string()
            );
        }
        let start = a
            .canonical_axis(p.axis())
            .map_err(|e| anyhow!("layer '{}': crop axis: {e}", self.name()))?;
        if start >= nd {
            bail!(
                "layer '{}': crop axis {} bigger than input dim ({})",
                self.name(),
                p.axis(),
                a.shape_string()
            );
        }
        if p.offset.len() > 1 && start + p.offset.len() != nd {
            bail!(
                "layer '{}': number of offset values specified ({}) must be equal to the number of dimensions following axis {start} of {}",
                self.name(),
                p.offset.len(),
                a.shape_string()
            );
        }
        let (sa, sb) = (a.shape(), b.shape());
        let mut shape = sa.clone();
        let mut offsets = vec![0usize; nd];
        for i in start..nd {
            let off = match p.offset.len() {
                0 => 0,
                1 => p.offset[0] as usize,
                _ => p.offset[i - start] as usize,
            };
            if sa[i] < off || sa[i] - off < sb[i] {
                bail!(
                    "layer '{}': invalid crop parameters in dimension {i}: offset {off} and size {} do not fit in {} (bottom shapes {} and {})",
                    self.name(),
                    sb[i],
                    sa[i],
                    a.shape_string(),
                    b.shape_string()
                );
            }
            shape[i] = sb[i];
            offsets[i] = off;
        }
        self.offsets = offsets;
        top[0].reshape(&shape)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        tensor::crop_forward(
            &read(&xb),
            &bottom[0].shape(),
            &mut write(&yb),
            &top[0].shape(),
            &self.offsets,
        );
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if pd[0] {
            let (dyb, dxb) = (top[0].diff_buf(), bottom[0].diff_buf());
            tensor::crop_backward(
                &read(&dyb),
                &top[0].shape(),
                &mut write(&dxb),
                &bottom[0].shape(),
                &self.offsets,
            );
        }
        if pd[1] {
            bottom[1].fill_diff(0.0);
        }
        Ok(())
    }
}
