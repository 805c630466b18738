//! Keeping the thread pool's workers awake while a net runs on the CPU.
//!
//! A net's pass is a few hundred parallel loops, many of them 0.05-1 ms long (a BatchNorm
//! chain makes four per pass). Left to rayon, a worker that finds no work sleeps within
//! microseconds, and waking it (a futex, then a halted virtual CPU to reschedule) costs ~20
//! µs per loop in the normal case; on a busy host the woken worker sometimes arrives after
//! the loop is over, and the loop runs on one thread. Worse, a loop started from a thread
//! outside the pool is handed over to the pool and that thread sleeps until it is done.
//!
//! So, as OpenMP runtimes do, the binary makes its main thread one of the pool's workers
//! ([`join_pool`]) and, while a pass runs ([`keep_awake`]), the other workers run a job that
//! polls the pool for work instead of sleeping. `CREMA_WAIT_POLICY=passive` (OpenMP's
//! `OMP_WAIT_POLICY` in our name) leaves them to sleep, for machines where spinning threads
//! cost someone else's time or a CPU quota. Which thread computes which part of a loop never
//! changes results: every op's partition and summation order are fixed (`backend::cpu`),
//! whatever runs them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

/// What idle workers do while a pass runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WaitPolicy {
    /// Poll for work (the default).
    Active,
    /// Sleep until rayon wakes them.
    Passive,
}

impl WaitPolicy {
    /// From `CREMA_WAIT_POLICY`'s value (unset or empty: active).
    pub fn parse(value: Option<&str>) -> Result<WaitPolicy> {
        match value.map(str::trim) {
            None | Some("") => Ok(WaitPolicy::Active),
            Some(v) if v.eq_ignore_ascii_case("active") => Ok(WaitPolicy::Active),
            Some(v) if v.eq_ignore_ascii_case("passive") => Ok(WaitPolicy::Passive),
            Some(v) => bail!("CREMA_WAIT_POLICY must be 'active' or 'passive', not '{v}'"),
        }
    }
}

/// Set once by [`join_pool`] from `CREMA_WAIT_POLICY`.
static PASSIVE: AtomicBool = AtomicBool::new(false);

/// Builds rayon's global pool with the calling thread as worker 0 (the other workers are
/// started now; `RAYON_NUM_THREADS` sets the total as before) and reads `CREMA_WAIT_POLICY`.
/// For the program's main thread: the pool assumes the thread lives as long as the process.
pub fn join_pool() -> Result<()> {
    let value = std::env::var("CREMA_WAIT_POLICY").ok();
    let policy = WaitPolicy::parse(value.as_deref())?;
    PASSIVE.store(policy == WaitPolicy::Passive, Ordering::Relaxed);
    rayon::ThreadPoolBuilder::new()
        .use_current_thread()
        .build_global()
        .map_err(|e| anyhow!("cannot start the CPU thread pool: {e}"))
}

/// Whether a region is open anywhere (at most one at a time: a second would only add
/// pollers to the same workers).
static OPEN: AtomicBool = AtomicBool::new(false);

/// While alive, the pool's other workers poll for work instead of sleeping. Dropping it lets
/// them go back to rayon's usual idling (they notice within a poll).
pub struct Awake {
    stop: Option<Arc<AtomicBool>>,
}

impl Awake {
    /// A guard that keeps nothing awake.
    pub fn none() -> Awake {
        Awake { stop: None }
    }
}

/// Opens a region when the caller is a worker of the global pool (the binary's main thread
/// after [`join_pool`]) with others to keep awake, and no region is open; otherwise the
/// returned guard does nothing. Callers outside the pool (tests, library users) are left as
/// they were: polling workers would only compete with their threads. Nothing either under
/// `CREMA_WAIT_POLICY=passive`.
pub fn keep_awake() -> Awake {
    let policy = if PASSIVE.load(Ordering::Relaxed) {
        WaitPolicy::Passive
    } else {
        WaitPolicy::Active
    };
    open(policy)
}

fn open(policy: WaitPolicy) -> Awake {
    let idle = Awake::none();
    if policy == WaitPolicy::Passive {
        return idle;
    }
    let threads = rayon::current_num_threads();
    if threads < 2 || rayon::current_thread_index().is_none() {
        return idle;
    }
    if OPEN.swap(true, Ordering::Acquire) {
        return idle;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let opener = rayon::current_thread_index();
    for _ in 1..threads {
        let stop = stop.clone();
        rayon::spawn(move || {
            // The jobs sit in the opener's own queue until stolen, and thieves take the oldest
            // first, so the opener should never run one; if it ever did, it would poll until
            // its own pass ended, which it would then never reach.
            if rayon::current_thread_index() != opener {
                poll_until(&stop);
            }
        });
    }
    Awake { stop: Some(stop) }
}

impl Drop for Awake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.store(true, Ordering::Release);
            OPEN.store(false, Ordering::Release);
        }
    }
}

/// A worker's loop while a region is open: run whatever the pool has; between finds, spin,
/// and every so often let the OS run another thread on this CPU (a data layer's prefetch
/// thread, say) so that polling never starves it.
fn poll_until(stop: &AtomicBool) {
    POLLING.fetch_add(1, Ordering::AcqRel);
    let mut idle = 0u32;
    while !stop.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    POLLING.fetch_sub(1, Ordering::AcqRel);
}

/// How many workers are polling now (for tests and diagnostics).
static POLLING: AtomicUsize = AtomicUsize::new(0);

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::time::{Duration, Instant};

    fn wait_for(what: &str, want: usize) {
        let start = Instant::now();
        while POLLING.load(Ordering::Acquire) != want {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}: {} workers polling, expected {want}",
                POLLING.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Outside a pool the guard does nothing; inside one (the caller as worker 0, as the
    /// binary's main thread is) every other worker polls until the guard drops, a second
    /// region at the same time adds no pollers, and parallel loops inside the region give
    /// the results they give outside it.
    #[test]
    fn regions_keep_the_other_workers_polling_until_dropped() {
        let outside = keep_awake();
        assert!(
            outside.stop.is_none(),
            "a thread outside any pool opened a region"
        );
        drop(outside);

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .use_current_thread()
            .build()
            .unwrap();
        let sum = |n: u64| (0..n).into_par_iter().map(|i| i * i % 7).sum::<u64>();
        let expected = sum(100_000);
        pool.install(|| {
            let region = keep_awake();
            assert!(
                region.stop.is_some(),
                "worker 0 of a 3-thread pool opened no region"
            );
            wait_for("inside the region", 2);
            let nested = keep_awake();
            assert!(
                nested.stop.is_none(),
                "a second region opened while one was open"
            );
            assert_eq!(sum(100_000), expected);
            assert_eq!(POLLING.load(Ordering::Acquire), 2);
            drop(nested);
            drop(region);
            wait_for("after the region", 0);
            let passive = open(WaitPolicy::Passive);
            assert!(passive.stop.is_none(), "a passive policy opened a region");
            let again = keep_awake();
            assert!(
                again.stop.is_some(),
                "the region did not close when dropped"
            );
        });
        wait_for("after the second region", 0);
    }

    #[test]
    fn wait_policy_values() {
        assert_eq!(WaitPolicy::parse(None).unwrap(), WaitPolicy::Active);
        assert_eq!(WaitPolicy::parse(Some("")).unwrap(), WaitPolicy::Active);
        assert_eq!(
            WaitPolicy::parse(Some("ACTIVE")).unwrap(),
            WaitPolicy::Active
        );
        assert_eq!(
            WaitPolicy::parse(Some(" passive")).unwrap(),
            WaitPolicy::Passive
        );
        let e = WaitPolicy::parse(Some("spin")).unwrap_err().to_string();
        assert!(
            e.contains("CREMA_WAIT_POLICY") && e.contains("'spin'"),
            "{e}"
        );
    }
}
