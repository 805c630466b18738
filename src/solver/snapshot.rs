//! Snapshots (`<prefix>_iter_<N>.caffemodel` + `.solverstate`, binary protobuf, as Caffe writes
//! them) and resuming from a solverstate. Files are written to a temporary name and renamed,
//! so an interrupted write never leaves a truncated snapshot.

use std::path::Path;
use std::rc::Rc;

use anyhow::{bail, Context, Result};

use super::Solver;
use crate::blob::{Buf, Mem};
use crate::proto::blob::{read_blob, write_blob};
use crate::proto::caffe::{solver_parameter::SnapshotFormat, SolverState};
use crate::proto::{read_net_binary, read_solverstate, write_binary_atomic};

impl Solver {
    pub fn snapshot_filename(&self, ext: &str) -> String {
        format!("{}_iter_{}{ext}", self.snapshot_prefix, self.iter)
    }

    /// Checks at start-up that snapshots can be written (Caffe's CheckSnapshotWritePermissions),
    /// so a long run does not fail at its first snapshot; an HDF5 snapshot_format is refused
    /// here for the same reason.
    pub fn check_snapshot_write_permissions(&self) -> Result<()> {
        if self.param.snapshot() == 0 && !self.param.snapshot_after_train() {
            return Ok(());
        }
        self.check_snapshot_format()?;
        let probe = self.snapshot_filename(".tempfile");
        match std::fs::File::create(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                Ok(())
            }
            Err(e) => bail!(
                "Cannot write to snapshot prefix '{}' ({e}). Make sure that the directory exists and is writable.",
                self.snapshot_prefix
            ),
        }
    }

    fn check_snapshot_format(&self) -> Result<()> {
        if self.param.snapshot_format() == SnapshotFormat::Hdf5 {
            bail!("snapshot_format: HDF5 is not supported by crema yet; use BINARYPROTO (the default)");
        }
        Ok(())
    }

    /// Writes the caffemodel and the solverstate for the current iteration.
    pub fn snapshot(&mut self) -> Result<()> {
        self.check_snapshot_format()?;
        let model = self.snapshot_filename(".caffemodel");
        if self.verbose {
            crate::info!("Snapshotting to binary proto file {model}");
        }
        let net = self.net.to_proto(self.param.snapshot_diff());
        write_binary_atomic(Path::new(&model), &net)
            .with_context(|| format!("writing snapshot {model}"))?;
        let state_file = self.snapshot_filename(".solverstate");
        let n = self.net.learnable.len();
        let mut state = SolverState {
            iter: Some(self.iter),
            learned_net: Some(model.clone()),
            current_step: Some(self.current_step),
            history: Vec::new(),
        };
        for (k, h) in self.history.iter().enumerate() {
            let shape = self.net.learnable[k % n].blob.shape();
            // On the GPU this is the history's one trip to the host: a counted copy down.
            let values = h.borrow();
            state.history.push(write_blob(&shape, &values, None));
        }
        if self.verbose {
            crate::info!("Snapshotting solver state to binary proto file {state_file}");
        }
        write_binary_atomic(Path::new(&state_file), &state)
            .with_context(|| format!("writing snapshot {state_file}"))?;
        self.last_snapshot_iter = Some(self.iter);
        Ok(())
    }

    /// Restores iteration, weights (from the state's learned_net), step and history.
    pub fn restore(&mut self, path: &Path) -> Result<()> {
        if path.extension().and_then(|e| e.to_str()) == Some("h5") {
            bail!(
                "{}: HDF5 solverstates are not supported by crema yet",
                path.display()
            );
        }
        let state = read_solverstate(path)?;
        self.iter = state.iter();
        if let Some(net_file) = &state.learned_net {
            let model = read_net_binary(Path::new(net_file)).with_context(|| {
                format!("loading the weights {net_file} named by {}", path.display())
            })?;
            self.net.copy_trained_layers_from(&model)?;
        }
        self.current_step = state.current_step();
        if state.history.len() != self.history.len() {
            bail!(
                "{}: Incorrect length of history blobs: the file has {}, the {} solver for this net needs {}",
                path.display(),
                state.history.len(),
                self.kind.name(),
                self.history.len()
            );
        }
        if self.verbose {
            crate::info!("{}Solver: restoring history", self.kind.name());
        }
        for (i, hp) in state.history.iter().enumerate() {
            let v =
                read_blob(hp).with_context(|| format!("{}: history blob {i}", path.display()))?;
            if v.data.len() != self.history[i].len() {
                bail!(
                    "{}: history blob {i} holds {} values, the parameter has {}",
                    path.display(),
                    v.data.len(),
                    self.history[i].len()
                );
            }
            self.history[i] = restored_history(v.data);
        }
        if let Some(g) = &self.gpu {
            // Up now, explicitly, rather than at the first update.
            for h in &self.history {
                h.device(g)?;
            }
        }
        Ok(())
    }
}

/// A restored history blob. All (+0.0) zeros become memory known to be zero, so that the GPU
/// solver can skip a frozen blob without reading its history; -0.0 is kept as written.
fn restored_history(values: Vec<f32>) -> Buf {
    if values.iter().all(|v| v.to_bits() == 0) {
        Rc::new(Mem::zeros(values.len()))
    } else {
        Rc::new(Mem::from_vec(values))
    }
}
