//! SIGINT / SIGHUP handling between iterations (`--sigint_effect`, `--sighup_effect`), as
//! Caffe's SignalHandler: the handler only raises a flag; the loop acts on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};

use super::Action;

pub fn parse_effect(s: &str) -> Result<Action> {
    Ok(match s {
        "stop" => Action::Stop,
        "snapshot" => Action::Snapshot,
        "none" => Action::None,
        other => {
            bail!("Invalid signal effect \"{other}\" was specified (use stop, snapshot or none)")
        }
    })
}

/// Installs handlers and returns a poller giving the action for any signal seen since the
/// last poll.
pub fn install(sigint: Action, sighup: Action) -> Result<Box<dyn Fn() -> Action>> {
    let int_flag = Arc::new(AtomicBool::new(false));
    let hup_flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&int_flag))?;
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup_flag))?;
    Ok(Box::new(move || {
        if int_flag.swap(false, Ordering::SeqCst) {
            return sigint;
        }
        if hup_flag.swap(false, Ordering::SeqCst) {
            return sighup;
        }
        Action::None
    }))
}
