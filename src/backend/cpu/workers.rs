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

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The open region, if any (at most one at a time: a second would only add pollers to the
/// same workers): the flag its pollers watch, and the thread that opened it.
struct Region {
    stop: Arc<AtomicBool>,
    opener: usize,
}

static REGION: Mutex<Option<Region>> = Mutex::new(None);

fn region() -> std::sync::MutexGuard<'static, Option<Region>> {
    // A panic while holding the lock leaves nothing half-done: the record is replaced whole.
    REGION.lock().unwrap_or_else(|e| e.into_inner())
}

/// While alive, the pool's other workers poll for work instead of sleeping. Dropping it lets
/// them go back to rayon's usual idling (they notice within a poll).
pub struct Awake {
    open: bool,
}

impl Awake {
    /// A guard that keeps nothing awake.
    pub fn none() -> Awake {
        Awake { open: false }
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
    if policy == WaitPolicy::Passive || rayon::current_num_threads() < 2 {
        return idle;
    }
    let Some(opener) = rayon::current_thread_index() else {
        return idle;
    };
    let mut r = region();
    if r.is_some() {
        return idle;
    }
    *r = Some(Region {
        stop: spawn_pollers(opener),
        opener,
    });
    Awake { open: true }
}

impl Drop for Awake {
    fn drop(&mut self) {
        if self.open {
            if let Some(r) = region().take() {
                r.stop.store(true, Ordering::Release);
            }
        }
    }
}

/// Runs `f`, a wait for something outside the pool (a data layer's next batch), with the
/// open region's workers released to sleep, and keeps them polling again afterwards. The
/// batch may need the pool itself (decoding runs there), and a poller that a busy worker
/// picked up while waiting inside such a job would hold that job up until the region
/// closed: the pass it waits for could then never end. Outside a region, just `f()`.
pub fn idle_while<R>(f: impl FnOnce() -> R) -> R {
    let opener = {
        let r = region();
        match r.as_ref() {
            Some(reg) if rayon::current_thread_index() == Some(reg.opener) => {
                reg.stop.store(true, Ordering::Release);
                Some(reg.opener)
            }
            _ => None,
        }
    };
    let out = f();
    if let Some(opener) = opener {
        if let Some(reg) = region().as_mut() {
            reg.stop = spawn_pollers(opener);
        }
    }
    out
}

/// Starts a poller for every worker but the opener; returns the flag that stops them.
fn spawn_pollers(opener: usize) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 1..rayon::current_num_threads() {
        let stop = stop.clone();
        rayon::spawn(move || {
            // The jobs sit in the opener's own queue until stolen, and thieves take the oldest
            // first, so the opener should never run one; if it ever did, it would poll until
            // its own pass ended, which it would then never reach.
            if rayon::current_thread_index() != Some(opener) {
                poll_until(&stop);
            }
        });
    }
    stop
}

/// How long a poller goes on finding nothing before it returns to rayon's sleeping. Besides
/// sparing the CPU through long serial stretches, it bounds what a poller costs where it
/// runs inside another job's wait (a worker busy with a job from outside the pass when the
/// region opened, say): that job resumes at most this long after the work runs out.
static IDLE_LIMIT_US: AtomicU64 = AtomicU64::new(2000);

/// A worker's loop while a region is open: run whatever the pool has; between finds, spin,
/// and every so often let the OS run another thread on this CPU (a data layer's prefetch
/// thread, say) so that polling never starves it.
fn poll_until(stop: &AtomicBool) {
    POLLING.fetch_add(1, Ordering::AcqRel);
    let limit = Duration::from_micros(IDLE_LIMIT_US.load(Ordering::Relaxed));
    let mut idle = 0u32;
    let mut since = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle = 0;
            continue;
        }
        if idle == 0 {
            since = Instant::now();
        }
        idle += 1;
        if idle.is_multiple_of(64) {
            if since.elapsed() > limit {
                break;
            }
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
    /// region at the same time adds none, a wait in `idle_while` releases them and they
    /// poll again after it, parallel loops inside the region give the results they give
    /// outside it, and pollers that find nothing for the idle limit return on their own.
    #[test]
    fn regions_keep_the_other_workers_polling_until_dropped() {
        let outside = keep_awake();
        assert!(!outside.open, "a thread outside any pool opened a region");
        drop(outside);
        assert_eq!(idle_while(|| 7), 7);

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .use_current_thread()
            .build()
            .unwrap();
        let sum = |n: u64| (0..n).into_par_iter().map(|i| i * i % 7).sum::<u64>();
        let expected = sum(100_000);
        pool.install(|| {
            // Long enough that nothing below times out, even on a loaded machine.
            IDLE_LIMIT_US.store(60_000_000, Ordering::Relaxed);
            let region = keep_awake();
            assert!(region.open, "worker 0 of a 3-thread pool opened no region");
            wait_for("inside the region", 2);
            let nested = keep_awake();
            assert!(!nested.open, "a second region opened while one was open");
            assert!(
                !open(WaitPolicy::Passive).open,
                "a passive policy opened a region"
            );
            assert_eq!(sum(100_000), expected);
            assert_eq!(POLLING.load(Ordering::Acquire), 2);
            idle_while(|| wait_for("while waiting outside the pool", 0));
            wait_for("after the wait", 2);
            drop(nested);
            drop(region);
            wait_for("after the region", 0);

            IDLE_LIMIT_US.store(1000, Ordering::Relaxed);
            let again = keep_awake();
            assert!(again.open, "the region did not close when dropped");
            // Nothing to do: the pollers give up after 1 ms with the region still open.
            wait_for("after the idle limit", 0);
            drop(again);
            IDLE_LIMIT_US.store(2000, Ordering::Relaxed);
        });
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
