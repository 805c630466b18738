//! Per-thread scratch buffers, kept between calls so that steady-state training allocates
//! nothing.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread-local buffer slot (`thread_local!` of a `RefCell<Vec<f32>>`).
pub type Slot = LocalKey<RefCell<Vec<f32>>>;

/// Runs `f` with this thread's buffer of `slot`, at least `len` values (contents left from
/// earlier calls). The buffer is taken out while in use, so a re-entrant call (work stolen
/// while waiting in a parallel loop) gets a fresh one instead of a borrow panic.
pub fn with<R>(slot: &'static Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut v = slot.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if v.len() < len {
        v.resize(len, 0.0);
    }
    let r = f(&mut v[..len]);
    slot.with(|s| {
        let mut kept = s.borrow_mut();
        if kept.len() < v.len() {
            *kept = v;
        }
    });
    r
}

/// `with`, the slice starting on a 64-byte boundary (a cache line: no vector read from it
/// straddles two).
pub fn with_aligned<R>(slot: &'static Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with(slot, len + 16, |buf| {
        let at = buf.as_ptr().align_offset(64).min(16);
        f(&mut buf[at..at + len])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static SLOT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    #[test]
    fn a_nested_call_gets_its_own_buffer_and_the_larger_one_is_kept() {
        with(&SLOT, 4, |outer| {
            outer.fill(1.0);
            with(&SLOT, 8, |inner| {
                assert_eq!(inner.len(), 8);
                inner.fill(2.0);
            });
            assert_eq!(outer, &[1.0; 4]);
        });
        assert_eq!(SLOT.with(|s| s.borrow().len()), 8);
        with(&SLOT, 3, |b| assert_eq!(b, &[2.0; 3]));
    }

    #[test]
    fn an_aligned_buffer_starts_on_a_cache_line() {
        for len in [1, 5, 100] {
            with_aligned(&SLOT, len, |b| {
                assert_eq!(b.len(), len);
                assert_eq!(b.as_ptr() as usize % 64, 0);
            });
        }
    }
}
