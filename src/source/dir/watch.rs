//! Following the manifest directory: notify's events ([`watch`]) turned into batches of
//! changes ([`run`]): a run of events is read as it comes, and sent once it has settled.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{DirState, Reads};
use crate::source::files;
use crate::source::{Batch, BatchSender};

/// What the file watcher reports: a manifest that changed (relative to the directory), or
/// `None`: rescan the whole directory (a directory came or went, or events were lost).
pub type FileEvent = Option<PathBuf>;

/// The watcher's events.
pub type Events = mpsc::UnboundedReceiver<FileEvent>;

/// Starts watching `dir` recursively. Events come on the returned channel until the watcher is
/// dropped.
pub fn watch(dir: &Path) -> notify::Result<(notify::RecommendedWatcher, Events)> {
    use notify::Watcher;
    let (tx, rx) = mpsc::unbounded_channel();
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
        Ok(ev) => {
            if ev.need_rescan() {
                let _ = tx.send(None);
            }
            if !announces_change(&ev.kind) || being_written(&ev) {
                return;
            }
            for p in ev.paths {
                if let Some(e) = file_event(&root, &p) {
                    let _ = tx.send(e);
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "file watch error; rescanning");
            let _ = tx.send(None);
        }
    })?;
    w.watch(dir, notify::RecursiveMode::Recursive)?;
    Ok((w, rx))
}

/// Whether an event may mean a manifest's text changed. On Linux (inotify), a file written in
/// place is taken when its writer closes it (`Close(Write)`), not at each `write(2)`: the first
/// change of a quiet period is applied at once (`runtime::debounce`), so a file read mid-write
/// (truncated, or only its first documents) would be served. Renames (an atomic replace),
/// links created, removals and metadata changes are taken as they come (a regular file
/// created is taken at its close, [`being_written`]). Other
/// platforms' watchers report no close: there every data change is taken.
fn announces_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    use notify::EventKind;
    let closes = cfg!(target_os = "linux");
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => closes,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Data(_)) => !closes,
        _ => true,
    }
}

/// A regular file just created, on Linux: whoever created it has it open (`open(2)` creates
/// files), and its close says when it is whole. A symbolic link (kubelet's layout) is whole
/// when created.
fn being_written(ev: &notify::Event) -> bool {
    cfg!(target_os = "linux")
        && matches!(ev.kind, notify::EventKind::Create(_))
        && ev
            .paths
            .iter()
            .all(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()))
}

/// What a path notify reports means: a manifest changed, a directory came or went or a mounted
/// ConfigMap's `..data` link was swapped (rescan), or nothing (hidden paths, other files).
fn file_event(root: &Path, p: &Path) -> Option<FileEvent> {
    let rel = p.strip_prefix(root).ok()?.to_path_buf();
    let hidden = rel
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    if files::is_manifest(&rel) {
        Some(Some(rel))
    } else if rel.file_name().is_some_and(|n| n == KUBELET_DATA_LINK) {
        // kubelet updates a mounted ConfigMap by renaming a new `..data_tmp` link over `..data`:
        // every visible file (a link through `..data`) may have changed.
        Some(None)
    } else if !hidden
        && !rel.as_os_str().is_empty()
        && (p.is_dir() || (!p.exists() && rel.extension().is_none()))
    {
        Some(None)
    } else {
        None
    }
}

/// The link kubelet swaps atomically to update a mounted ConfigMap or Secret.
const KUBELET_DATA_LINK: &str = "..data";

/// How long the events must stop after an event that removed files before the removals are
/// applied: `rm -r` removes the files before the directory, and a directory that goes away must
/// not be taken as "every object deleted". The changes before and after the wait make one
/// batch. A run with removals is taken as it is after [`REMOVAL_MAX`].
const REMOVAL_SETTLE: Duration = Duration::from_millis(50);
const REMOVAL_MAX: Duration = Duration::from_secs(1);

/// How long the events must stop after a change before the run is sent: files written one
/// after the other by one command (a script, `cp`, `tar`, `git checkout`) come microseconds to
/// milliseconds apart and make one batch, so one generation (`e2e_updates`: a new revision's
/// file, the KIngress moved to it and the old revision's file removed are one generation, and
/// it prints how many changes were split; with 3 ms, a loaded machine split them, and even 10 ms
/// splits some when the writer is descheduled between its writes: each part is then served as
/// it comes). The files are read as their events come, so the settle runs while they are read:
/// an isolated change waits only for what is left of it after its read, not for the settle and
/// then the read. A run of writes is taken as it is after [`WRITE_MAX`].
const WRITE_SETTLE: Duration = Duration::from_millis(10);
const WRITE_MAX: Duration = Duration::from_millis(200);

/// How often a vanished directory is looked for.
const REAPPEAR_POLL: Duration = Duration::from_secs(1);

/// Runs the directory source: the initial load as the first batch, then one batch per run of
/// file events (each changed file read as its event comes, read again if it changes again),
/// sent once the run has settled, until the receiver goes away. If the directory vanishes,
/// nothing is sent (the last objects stay served), `health` and a WARN line say so, and when
/// it reappears it is watched again and reloaded in full.
pub async fn run(
    dir: PathBuf,
    watcher: notify::RecommendedWatcher,
    mut events: Events,
    tx: BatchSender,
    health: crate::source::Health,
) {
    let mut _watcher = watcher;
    let load_dir = dir.clone();
    let initial = tokio::task::spawn_blocking(move || {
        let mut state = DirState::default();
        let changes = state.reload(&load_dir, None);
        let errors = state.errors();
        (state, Batch { changes, errors })
    })
    .await;
    let (mut state, initial) = match initial {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = %e, dir = %dir.display(), "initial load failed");
            return;
        }
    };
    tracing::info!(objects = initial.changes.len(), errors = initial.errors.len(), dir = %dir.display(), "initial load");
    if tx.send(initial).is_err() {
        return;
    }
    loop {
        if health.stale().is_some() {
            tokio::time::sleep(REAPPEAR_POLL).await;
            if !dir.is_dir() {
                continue;
            }
            match watch(&dir) {
                Ok((w, e)) => (_watcher, events) = (w, e),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %dir.display(), "directory is back but cannot be watched yet");
                    continue;
                }
            }
            let batch = tokio::task::block_in_place(|| Batch {
                changes: state.reload(&dir, None),
                errors: state.errors(),
            });
            health.set_live();
            tracing::info!(dir = %dir.display(), changes = batch.changes.len(), "the --from directory is back; following it again");
            if tx.send(batch).is_err() {
                return;
            }
            continue;
        }
        let Some(first) = events.recv().await else {
            return;
        };
        let Some(run) = settle(&dir, &state, &mut events, EventRun::new(&dir, first)).await else {
            return;
        };
        if !dir.is_dir() {
            let why = format!(
                "the --from directory {} is gone; serving the last objects loaded from it until it reappears",
                dir.display()
            );
            tracing::warn!(dir = %dir.display(), objects = state.current.len(), "{why}");
            health.set_stale(why);
            continue;
        }
        let files = run.files.len();
        let batch = tokio::task::block_in_place(|| {
            let changes = if run.rescan {
                state.reload(&dir, None)
            } else {
                state.apply(run.reads)
            };
            Batch {
                changes,
                errors: state.errors(),
            }
        });
        tracing::debug!(
            files,
            rescan = run.rescan,
            changes = batch.changes.len(),
            "files reloaded"
        );
        if tx.send(batch).is_err() {
            return;
        }
    }
}

/// A run of file events being collected: the files it has read so far (not applied yet), and
/// whether it waits for removals to finish.
struct EventRun {
    first: Instant,
    last: Instant,
    /// Every file the run's events named.
    files: BTreeSet<PathBuf>,
    /// The files announced since they were last read.
    unread: BTreeSet<PathBuf>,
    reads: Reads,
    /// The whole directory is to be read (once, when the run has settled).
    rescan: bool,
    /// Something went away: wait [`REMOVAL_SETTLE`].
    removal: bool,
}

impl EventRun {
    fn new(dir: &Path, first: FileEvent) -> EventRun {
        let now = Instant::now();
        let mut run = EventRun {
            first: now,
            last: now,
            files: BTreeSet::new(),
            unread: BTreeSet::new(),
            reads: Reads::default(),
            rescan: false,
            removal: false,
        };
        run.note(dir, first);
        run
    }

    /// Takes in an event, at the instant this task sees it (not when the watcher reported
    /// it: on a loaded machine the writer and this task are delayed alike, and a settle
    /// measured from the watcher's instants ended early, splitting `e2e_updates`' changes).
    fn note(&mut self, dir: &Path, event: FileEvent) {
        self.last = Instant::now();
        match event {
            Some(p) => {
                self.removal |= !dir.join(&p).exists();
                self.files.insert(p.clone());
                self.unread.insert(p);
            }
            None => (self.rescan, self.removal) = (true, true),
        }
    }

    /// When the run is complete: once its events have stopped for the settle, or at its
    /// maximum.
    fn due(&self) -> Instant {
        let (settle, max) = if self.removal {
            (REMOVAL_SETTLE, REMOVAL_MAX)
        } else {
            (WRITE_SETTLE, WRITE_MAX)
        };
        (self.last + settle).min(self.first + max)
    }
}

/// Collects a run of events until it has settled, reading each announced file at once (the
/// reads run while the run settles; a rescan reads the whole directory once, after). `None`
/// when the watcher has gone.
async fn settle(
    dir: &Path,
    state: &DirState,
    events: &mut Events,
    mut run: EventRun,
) -> Option<EventRun> {
    loop {
        while let Ok(e) = events.try_recv() {
            run.note(dir, e);
        }
        let due = run.due();
        let done = Instant::now() >= due;
        if !run.rescan && !run.unread.is_empty() {
            let paths = std::mem::take(&mut run.unread);
            tokio::task::block_in_place(|| state.read(dir, paths, &mut run.reads));
            if !done {
                continue;
            }
        }
        if done {
            return Some(run);
        }
        match tokio::time::timeout_at(due.into(), events.recv()).await {
            Ok(Some(e)) => run.note(dir, e),
            Ok(None) => return None,
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::dir::tests::KINGRESS;

    /// A file written in place in two halves is never read half-written: its first event
    /// comes once the writer closes it (Linux: inotify's close-write).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_file_written_in_place_is_announced_when_its_writer_closes_it() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for existing in [false, true] {
            if existing {
                std::fs::write(root.join("a.yaml"), "").unwrap();
            }
            let (_w, mut events) = watch(&root).unwrap();
            let mut f = std::fs::File::create(root.join("a.yaml")).unwrap();
            f.write_all(&KINGRESS.as_bytes()[..100]).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert!(
                events.try_recv().is_err(),
                "nothing while it is being written"
            );
            f.write_all(&KINGRESS.as_bytes()[100..]).unwrap();
            drop(f);
            let ev = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
                .await
                .expect("an event once closed");
            assert_eq!(ev, Some(Some(PathBuf::from("a.yaml"))));
            let loaded = files::load_file(&root, Path::new("a.yaml"));
            assert_eq!(loaded.objects.len(), 2, "whole when announced");
        }
        // A rename over a manifest (an atomic replace) is announced at once.
        let (_w, mut events) = watch(&root).unwrap();
        std::fs::write(root.join(".tmp"), KINGRESS).unwrap();
        std::fs::rename(root.join(".tmp"), root.join("a.yaml")).unwrap();
        let ev = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await;
        assert_eq!(ev.expect("renamed"), Some(Some(PathBuf::from("a.yaml"))));
    }

    #[test]
    fn kubelet_layout_events_read_only_visible_links_and_rescan_on_data_swap() {
        let root = Path::new("/m");
        let ev = |p: &str| file_event(root, &root.join(p));
        assert_eq!(ev("app.yaml"), Some(Some(PathBuf::from("app.yaml"))));
        assert_eq!(ev("..2026_12_01_11_00_00.1/app.yaml"), None);
        assert_eq!(ev("sub/.hidden/app.yaml"), None);
        assert_eq!(ev("..data_tmp"), None);
        assert_eq!(ev("..data"), Some(None), "the swap rescans");
        let dir = tempfile::tempdir().unwrap();
        let ts = dir.path().join("..2026_12_01_11_00_00.1");
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("app.yaml"), KINGRESS).unwrap();
        std::os::unix::fs::symlink("..2026_12_01_11_00_00.1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/app.yaml", dir.path().join("app.yaml")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        assert_eq!(
            files::list_files(dir.path()).unwrap(),
            vec![PathBuf::from("app.yaml")],
            "links followed once, hidden directories skipped"
        );
    }
}
