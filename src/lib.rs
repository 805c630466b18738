//! crema: a Caffe-compatible neural-network trainer.
//!
//! The flow: `proto` reads Caffe's files; `net` builds a Net from a NetParameter; `layers`
//! hold each layer's shape logic and call `backend` ops for arithmetic; `solver` trains;
//! `cli` is the `crema` command.

pub mod audit;
pub mod backend;
pub mod blob;
pub mod cli;
pub mod data;
pub mod filler;
pub mod layers;
pub mod net;
pub mod proto;
pub mod rng;
pub mod solver;
pub mod util;
