//! Reading files on every core.

use std::path::{Path, PathBuf};

use crate::parallel::{run, Cores};

/// `f` of each of `rels`, on one thread per core, each taking the next path not yet done; the
/// results are in the order of `rels`.
pub(crate) fn map<T: Send>(rels: &[PathBuf], f: impl Fn(&Path) -> T + Sync) -> Vec<T> {
    run(&Cores::with_caller(), rels.iter().collect(), |rel| f(rel))
}
