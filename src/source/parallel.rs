//! Reading files on every core.

use std::path::{Path, PathBuf};

/// `f` of each of `rels`, on one thread per core, each taking the next path not yet done; the
/// results are in the order of `rels`.
pub(crate) fn map<T: Send + Default>(rels: &[PathBuf], f: impl Fn(&Path) -> T + Sync) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(rels.len());
    if threads <= 1 {
        return rels.iter().map(|rel| f(rel)).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<T> = std::iter::repeat_with(T::default)
        .take(rels.len())
        .collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(rel) = rels.get(i) else {
                            return done;
                        };
                        done.push((i, f(rel)));
                    }
                })
            })
            .collect();
        for w in workers {
            // A worker's panic is the caller's, as it would be on one thread.
            let done = w.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (i, one) in done {
                if let Some(slot) = out.get_mut(i) {
                    *slot = one;
                }
            }
        }
    });
    out
}
