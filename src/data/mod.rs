//! Data input: Caffe's DataTransformer, LMDB reading, image decoding and resizing as OpenCV
//! does them, HDF5 reading, and the prefetch thread the data layers share.

#[cfg(feature = "hdf5")]
pub mod hdf5;
pub mod image;
pub mod jpeg;
pub mod lmdb;
pub mod prefetch;
pub mod transformer;

use crate::rng::CaffeRng;

/// Caffe's `shuffle` (a Fisher-Yates pass from the back, each swap partner uniform in [0, i]).
pub fn shuffle<T>(items: &mut [T], rng: &mut CaffeRng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u32 + 1) as usize;
        items.swap(i, j);
    }
}
