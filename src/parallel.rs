//! Work shared over the machine's cores, with a budget, so that a stage run on several threads
//! uses the cores the others leave idle and no more.
//!
//! The first load builds the two gateways' engines on a thread each; the cluster-local one has
//! three times the virtual hosts and finishes well after the external one. Each engine hands its
//! large steps to [`run`] in pieces: the calling thread works through them, and helpers join
//! only while [`Cores`] has a core nobody occupies (so while both engines run, each works alone
//! and the external gateway is served as early as before; once it is done, its core helps the
//! other). Results are in the order of the pieces, whichever thread did them: output does not
//! depend on the scheduling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// The machine's cores and how many are occupied.
#[derive(Debug)]
pub struct Cores {
    total: usize,
    busy: Mutex<usize>,
    freed: Condvar,
}

impl Cores {
    /// `total` cores, none occupied.
    pub fn new(total: usize) -> Cores {
        Cores {
            total: total.max(1),
            busy: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The cores of this machine (read once per process), none occupied.
    pub fn of_machine() -> Cores {
        static MACHINE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        Cores::new(
            *MACHINE.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        )
    }

    /// The machine's cores with one occupied: the calling thread's.
    pub fn with_caller() -> Cores {
        let cores = Cores::of_machine();
        cores.occupy();
        cores
    }

    pub fn total(&self) -> usize {
        self.total
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A thread starts working on one core (it may be more than the machine has: threads that
    /// are started anyway, such as one per gateway).
    pub fn occupy(&self) {
        *self.lock() += 1;
    }

    /// A thread that [`Cores::occupy`]d a core is done with it.
    pub fn vacate(&self) {
        let mut busy = self.lock();
        *busy = busy.saturating_sub(1);
        drop(busy);
        self.freed.notify_all();
    }

    /// Waits for a free core and occupies it; false (nothing occupied) once `wanted` is false.
    fn acquire(&self, wanted: impl Fn() -> bool) -> bool {
        let busy = self.lock();
        let mut busy = self
            .freed
            .wait_while(busy, |b| *b >= self.total && wanted())
            .unwrap_or_else(PoisonError::into_inner);
        if !wanted() {
            return false;
        }
        *busy += 1;
        true
    }

    /// Wakes the helpers waiting for a core (their work may be gone).
    fn wake(&self) {
        drop(self.lock());
        self.freed.notify_all();
    }
}

/// `f` of each piece of `work`, the results in the order of `work`. The calling thread (which
/// occupies its core already) does pieces until none is left; helper threads, at most one per
/// other core, each wait for a core free in `cores` and then do pieces too.
pub fn run<I: Send, R: Send>(cores: &Cores, work: Vec<I>, f: impl Fn(I) -> R + Sync) -> Vec<R> {
    let n = work.len();
    let helpers = cores.total.saturating_sub(1).min(n.saturating_sub(1));
    if helpers == 0 {
        return work.into_iter().map(f).collect();
    }
    let queue = Mutex::new(work.into_iter().enumerate());
    let left = AtomicUsize::new(n);
    let next = || {
        let item = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
        if item.is_some() && left.fetch_sub(1, Ordering::AcqRel) == 1 {
            cores.wake();
        }
        item
    };
    let work_through = || {
        let mut done = Vec::new();
        while let Some((i, item)) = next() {
            done.push((i, f(item)));
        }
        done
    };
    let mut out: Vec<Option<R>> = std::iter::repeat_with(|| None).take(n).collect();
    std::thread::scope(|scope| {
        let spawned: Vec<_> = (0..helpers)
            .map(|_| {
                scope.spawn(|| {
                    if !cores.acquire(|| left.load(Ordering::Acquire) > 0) {
                        return Vec::new();
                    }
                    // Its core back, also when `f` panics.
                    let _vacate = OnDrop(|| cores.vacate());
                    work_through()
                })
            })
            .collect();
        // When the caller stops, also by a panic in `f`, no helper waits for a core any more
        // (the scope joins them before the panic goes on).
        let _no_more = OnDrop(|| {
            left.store(0, Ordering::Release);
            cores.wake();
        });
        let mine = work_through();
        // A helper's panic is the caller's, as it would be on one thread.
        let theirs = spawned
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        for (i, r) in std::iter::once(mine).chain(theirs).flatten() {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
    });
    out.into_iter().flatten().collect()
}

/// Runs its closure when dropped (on unwinding too).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// [`run`] over `items` in consecutive pieces of `piece` items (the last one shorter); one
/// result per piece.
pub fn pieces<'a, T: Sync, R: Send>(
    cores: &Cores,
    items: &'a [T],
    piece: usize,
    f: impl Fn(&'a [T]) -> R + Sync,
) -> Vec<R> {
    run(cores, items.chunks(piece.max(1)).collect(), f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    /// A budget of `n` cores, every one of them occupied (by the caller and other engines).
    fn all_occupied(n: usize) -> Cores {
        let cores = Cores::new(n);
        for _ in 0..n {
            cores.occupy();
        }
        cores
    }

    #[test]
    fn results_keep_the_order_of_the_work() {
        let cores = Cores::new(4);
        cores.occupy();
        let items: Vec<u64> = (0..10_000).collect();
        let sums = pieces(&cores, &items, 7, |p| p.iter().sum::<u64>());
        let expected: Vec<u64> = items.chunks(7).map(|p| p.iter().sum()).collect();
        assert_eq!(sums, expected);
        let squares = run(&cores, items.clone(), |x| x * x);
        assert_eq!(squares, items.iter().map(|x| x * x).collect::<Vec<_>>());
        // Every helper gave its core back.
        assert_eq!(*cores.lock(), 1);
    }

    #[test]
    fn helpers_wait_for_a_free_core_and_join_when_one_is_vacated() {
        // Two cores, both occupied (two engines): the caller works alone until the other
        // vacates its core, then a helper takes pieces too.
        let cores = Arc::new(all_occupied(2));
        let release = Arc::new(AtomicBool::new(false));
        let other = {
            let (cores, release) = (cores.clone(), release.clone());
            std::thread::spawn(move || {
                while !release.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                cores.vacate();
            })
        };
        let caller = std::thread::current().id();
        let work: Vec<usize> = (0..200).collect();
        let threads = run(&cores, work, |i| {
            if i == 10 {
                release.store(true, Ordering::Release);
            }
            // Slow pieces, so that the helper gets some once it has a core.
            std::thread::sleep(Duration::from_millis(2));
            std::thread::current().id()
        });
        other.join().expect("other thread");
        assert!(
            threads[..10].iter().all(|t| *t == caller),
            "no helper before a core was free"
        );
        assert!(
            threads.iter().any(|t| *t != caller),
            "a helper joined once a core was free"
        );
        assert_eq!(*cores.lock(), 1);
    }

    #[test]
    fn a_panic_in_the_caller_reaches_it_and_frees_the_waiting_helpers() {
        // No free core, so the helper waits; the caller's panic must end that wait (not hang
        // in the scope's join) and come out of `run`.
        let cores = all_occupied(2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&cores, (0..50).collect(), |i: i32| {
                assert!(i < 5, "piece {i} fails");
                i
            })
        }));
        assert!(caught.is_err());
        assert_eq!(*cores.lock(), 2);
    }

    #[test]
    fn a_helper_waiting_for_a_core_stops_when_the_work_is_done() {
        // No free core at all: the caller does everything and the waiting helper returns.
        let cores = all_occupied(2);
        let threads = run(&cores, (0..50).collect(), |_: i32| {
            std::thread::current().id()
        });
        let caller = std::thread::current().id();
        assert!(threads.iter().all(|t| *t == caller));
        assert_eq!(*cores.lock(), 2);
    }
}
