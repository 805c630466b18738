//! The `crema` command line: Caffe's commands and flag spellings, plus crema's own tools.

pub mod args;
pub mod audit;
pub mod backend;
pub mod convert;
pub mod device;
pub mod diff;
pub mod inspect;
pub mod kernels;
pub mod logparse;
pub mod plot;
pub mod selftest;
pub mod time;
pub mod train;
