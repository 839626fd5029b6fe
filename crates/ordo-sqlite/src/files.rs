//! File operations the read stores share: small files replaced durably, and a
//! database's files removed together.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory holding `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes the directory entries under `dir` (files created, renamed, removed) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces the file at `path` by one holding `contents`, atomically and durably: a
/// temporary file beside it, synced, renamed over it, then the directory synced.
pub(crate) fn write_durably(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = with_suffix(path, ".tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    sync_dir(dir_of(path))
}

/// Removes the file at `path`; one already gone is fine.
fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the file at `path` (gone already is fine) and syncs its directory.
pub(crate) fn remove_durably(path: &Path) -> std::io::Result<()> {
    remove_if_present(path)?;
    sync_dir(dir_of(path))
}

/// Removes the SQLite database at `path` with its log, its shared-memory index and the
/// read store's unsynced-writes marker.
pub(crate) fn remove_database(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm", ".unsynced"] {
        remove_if_present(&with_suffix(path, suffix))?;
    }
    sync_dir(dir_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_durable_write_replaces_the_file_and_a_removal_takes_every_file_of_a_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pointer = dir.path().join("read.db.active");
        write_durably(&pointer, b"first").expect("write");
        write_durably(&pointer, b"second").expect("write again");
        assert_eq!(std::fs::read_to_string(&pointer).expect("read"), "second");
        assert!(!with_suffix(&pointer, ".tmp").exists());

        let db = dir.path().join("read.db");
        for suffix in ["", "-wal", "-shm", ".unsynced"] {
            std::fs::write(with_suffix(&db, suffix), b"x").expect("a file");
        }
        remove_database(&db).expect("remove");
        remove_database(&db).expect("removing it again is fine");
        for suffix in ["", "-wal", "-shm", ".unsynced"] {
            assert!(!with_suffix(&db, suffix).exists(), "{suffix}");
        }
        assert!(pointer.exists(), "other files stay");
    }
}
