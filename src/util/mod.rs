//! Small shared pieces: glog-format logging, the terminal progress line, hashing, numpy files.

pub mod glog;
pub mod gradcheck;
pub mod hash;
pub mod npy;
pub mod progress;
