//! Small shared pieces: glog-format logging, hashing, numpy files.

pub mod glog;
pub mod gradcheck;
pub mod hash;
pub mod npy;
