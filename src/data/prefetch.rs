//! Prefetching: a data layer's reading, decoding and transforming run on a thread of their
//! own, `prefetch` batches ahead, so that loading overlaps compute. One thread produces the
//! batches in order, so the order is the same as loading them on demand.

use std::sync::mpsc::{sync_channel, Receiver, RecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

/// One batch: the data top and the labels (empty when the layer has no label top).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub data_shape: Vec<usize>,
    pub data: Vec<f32>,
    pub label: Vec<f32>,
}

/// Produces batches one after another (runs on the prefetch thread).
pub trait BatchLoader: Send + 'static {
    fn load_batch(&mut self) -> Result<Batch>;
}

pub struct Prefetcher {
    layer: String,
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    waited: Duration,
    failed: Option<String>,
}

impl Prefetcher {
    /// Starts the thread; it keeps up to `depth` batches ready (at least one is being
    /// prepared while forward runs).
    pub fn start(layer: &str, depth: usize, mut loader: impl BatchLoader) -> Result<Prefetcher> {
        let (tx, rx) = sync_channel::<Result<Batch>>(depth.saturating_sub(1));
        let handle = std::thread::Builder::new()
            .name(format!("prefetch:{layer}"))
            .spawn(move || loop {
                let batch = loader.load_batch();
                let stop = batch.is_err();
                // A closed channel means the layer was dropped: stop quietly.
                if tx.send(batch).is_err() || stop {
                    break;
                }
            })
            .map_err(|e| anyhow!("layer '{layer}': cannot start the prefetch thread: {e}"))?;
        Ok(Prefetcher {
            layer: layer.to_string(),
            rx: Some(rx),
            handle: Some(handle),
            waited: Duration::ZERO,
            failed: None,
        })
    }

    /// The next batch, waiting for the thread if it is not ready.
    pub fn next_batch(&mut self) -> Result<Batch> {
        if let Some(msg) = &self.failed {
            bail!("{msg}");
        }
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        let start = Instant::now();
        // Decoding may run on the CPU pool: its workers must be free to take it.
        let got = crate::backend::cpu::workers::idle_while(|| rx.recv());
        self.waited += start.elapsed();
        match got {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => {
                self.failed = Some(format!("{e:#}"));
                Err(e)
            }
            Err(RecvError) => {
                let msg = format!(
                    "layer '{}': the prefetch thread stopped unexpectedly (it panicked)",
                    self.layer
                );
                self.failed = Some(msg.clone());
                bail!("{msg}")
            }
        }
    }

    /// Total time `next` spent waiting for batches.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Closing the channel unblocks a thread waiting to hand over a batch.
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
