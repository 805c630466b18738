//! The `crema` command line: Caffe's commands and flag spellings, plus crema's own tools.

pub mod args;
pub mod inspect;
pub mod time;
pub mod train;
