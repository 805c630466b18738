//! Small shared pieces: glog-format logging, hashing, numpy files.

pub mod glog;
pub mod hash;
pub mod npy;
pub mod gradcheck;
