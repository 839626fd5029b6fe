//! Generations of the embedded read store, for blue-green rebuilds.
//!
//! The configured path (say `data/read.db`) names the first generation. A rebuild creates
//! `data/read.g<id>.db` beside it; activating it writes its file name to
//! `data/read.db.active` (atomically: temporary file, fsync, rename, fsync of the
//! directory), which is what every later start opens.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_trait::async_trait;
use uuid::Uuid;

use ordo_domain::{
    ParkedEvent, ReadGeneration, ReadStoreError, ReadStoreInspector, ReadStoreProvider, RebuildLock,
};
use ordo_es::Checkpoint;

use crate::SqliteReadStore;
use crate::files::{remove_database, write_durably};

/// The generations of one embedded read store. Holds an exclusive lock on
/// `<path>.lock` from [`open_active`](ReadStoreProvider::open_active) until dropped, so two
/// processes never run projections (or a rebuild) on the same read models.
#[derive(Debug)]
pub struct SqliteReadStores {
    base: PathBuf,
    lock: std::sync::Mutex<Option<std::fs::File>>,
    /// Set while this process holds the rebuild lock: the file lock keeps other
    /// processes out, this keeps a second holder in this one out, as on PostgreSQL.
    rebuilding: Arc<AtomicBool>,
}

fn io_error(e: std::io::Error) -> ReadStoreError {
    ReadStoreError::Unavailable(Box::new(e))
}

impl SqliteReadStores {
    /// `base` is the configured read-store path.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        Self {
            base: base.into(),
            lock: std::sync::Mutex::new(None),
            rebuilding: Arc::default(),
        }
    }

    /// Takes the exclusive lock of these read models, or says who holds it.
    fn lock(&self) -> Result<(), ReadStoreError> {
        let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(self.dir()).map_err(io_error)?;
        let path = self.dir().join(format!("{}.lock", self.base_name()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {
                *held = Some(file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(ReadStoreError::Unavailable(
                format!(
                    "another ordo process is using the read models at {} (it holds {}); stop it, or ask it \
                     through its admin endpoints (POST /api/v1/admin/replay)",
                    self.base.display(),
                    path.display()
                )
                .into(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(e)),
        }
    }

    fn dir(&self) -> PathBuf {
        match self.base.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn base_name(&self) -> String {
        self.base.file_name().map_or_else(
            || "read.db".to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    fn pointer(&self) -> PathBuf {
        self.dir().join(format!("{}.active", self.base_name()))
    }

    /// `read.db` → (`read`, `.db`): generations are `read.g<id>.db`.
    fn stem_and_ext(&self) -> (String, String) {
        let name = self.base_name();
        match name.rfind('.') {
            Some(i) if i > 0 => (name[..i].to_string(), name[i..].to_string()),
            _ => (name, String::new()),
        }
    }

    fn is_generation(&self, file: &str) -> bool {
        let (stem, ext) = self.stem_and_ext();
        file == self.base_name()
            || (file.starts_with(&format!("{stem}.g"))
                && file.ends_with(&ext)
                && !file.contains('/'))
    }

    /// The file name of the active generation.
    fn active_name(&self) -> Result<String, ReadStoreError> {
        match std::fs::read_to_string(self.pointer()) {
            Ok(text) => {
                let name = text.trim().to_string();
                if self.is_generation(&name) {
                    Ok(name)
                } else {
                    Err(ReadStoreError::Corrupt(format!(
                        "{} names {name:?}, which is not a generation of {}",
                        self.pointer().display(),
                        self.base.display()
                    )))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(self.base_name()),
            Err(e) => Err(io_error(e)),
        }
    }

    fn open(&self, name: &str) -> Result<ReadGeneration, ReadStoreError> {
        let store = SqliteReadStore::open(self.dir().join(name))?;
        Ok(ReadGeneration {
            id: name.to_string(),
            store: Arc::new(store),
        })
    }
}

#[async_trait]
impl ReadStoreProvider for SqliteReadStores {
    async fn open_active(&self) -> Result<ReadGeneration, ReadStoreError> {
        self.lock()?;
        let name = self.active_name()?;
        self.open(&name)
    }

    async fn create_generation(&self) -> Result<ReadGeneration, ReadStoreError> {
        let (stem, ext) = self.stem_and_ext();
        let name = format!("{stem}.g{}{ext}", Uuid::now_v7().simple());
        self.open(&name)
    }

    async fn activate(&self, id: &str) -> Result<(), ReadStoreError> {
        if !self.is_generation(id) || !self.dir().join(id).exists() {
            return Err(ReadStoreError::Corrupt(format!(
                "no read-store generation {id:?}"
            )));
        }
        write_durably(&self.pointer(), id.as_bytes()).map_err(io_error)
    }

    async fn active_id(&self) -> Result<String, ReadStoreError> {
        self.active_name()
    }

    /// The process lock taken at open already keeps every other process out; one holder
    /// at a time in this one.
    async fn try_lock_rebuild(&self) -> Result<Option<RebuildLock>, ReadStoreError> {
        self.lock()?;
        Ok(RebuildLock::take_flag(&self.rebuilding))
    }

    async fn drop_inactive(&self) -> Result<u32, ReadStoreError> {
        self.lock()?;
        let active = self.active_name()?;
        let mut dropped = 0;
        for entry in std::fs::read_dir(self.dir()).map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != active && self.is_generation(&name) {
                remove_database(&self.dir().join(&name)).map_err(io_error)?;
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}

impl SqliteReadStores {
    /// Whether another process holds the lock of these read models (any ordo process
    /// serving or rebuilding them). Tested by taking the lock and letting it go at once:
    /// flock(2) has no way to ask without trying. The lock file is never created here.
    fn locked_elsewhere(&self) -> Result<bool, ReadStoreError> {
        if self
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(false);
        }
        let path = self.dir().join(format!("{}.lock", self.base_name()));
        let file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error(e)),
        };
        match file.try_lock() {
            Ok(()) => Ok(false),
            Err(std::fs::TryLockError::WouldBlock) => Ok(true),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(e)),
        }
    }

    /// The file of generation `id`, refusing anything that is not one.
    fn generation_path(&self, id: &str) -> Result<PathBuf, ReadStoreError> {
        if self.is_generation(id) {
            Ok(self.dir().join(id))
        } else {
            Err(ReadStoreError::Corrupt(format!(
                "no read-store generation {id:?}"
            )))
        }
    }
}

/// Read-only: files are read, never created (not even the data dir).
#[async_trait]
impl ReadStoreInspector for SqliteReadStores {
    async fn active_generation(&self) -> Result<String, ReadStoreError> {
        self.active_name()
    }

    async fn generation_ids(&self) -> Result<Vec<String>, ReadStoreError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(self.dir()).map_err(io_error)? {
            let name = entry
                .map_err(io_error)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if self.is_generation(&name) {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The lock of the embedded read models is held by every process using them, so a
    /// rebuild is running when it is held and a generation other than the active one
    /// exists; without a holder such a generation is a leftover, dropped at the next
    /// start.
    async fn rebuild_running(&self) -> Result<bool, ReadStoreError> {
        if !self.locked_elsewhere()? {
            return Ok(false);
        }
        let active = self.active_name()?;
        Ok(self.generation_ids().await?.iter().any(|id| *id != active))
    }

    async fn checkpoint(
        &self,
        generation: &str,
        projection: &str,
    ) -> Result<Option<Checkpoint>, ReadStoreError> {
        let path = self.generation_path(generation)?;
        let projection = projection.to_string();
        tokio::task::spawn_blocking(move || crate::read::read_only_checkpoint(&path, &projection))
            .await
            .map_err(|e| ReadStoreError::Other(Box::new(e)))?
    }

    async fn parked(
        &self,
        generation: &str,
        projection: &str,
    ) -> Result<Vec<ParkedEvent>, ReadStoreError> {
        let path = self.generation_path(generation)?;
        let projection = projection.to_string();
        tokio::task::spawn_blocking(move || crate::read::read_only_parked(&path, &projection))
            .await
            .map_err(|e| ReadStoreError::Other(Box::new(e)))?
    }
}

/// The provider contract's suite, each case on read models in a directory of their own.
#[cfg(test)]
mod conformance {
    ordo_domain::read_store_provider_conformance!(guarded async {
        let dir = tempfile::tempdir().expect("temp dir");
        (super::SqliteReadStores::new(dir.path().join("read.db")), dir)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_generation_becomes_active_durably_and_the_old_one_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let provider = SqliteReadStores::new(dir.path().join("read.db"));
        let first = provider.open_active().await.expect("open");
        assert_eq!(first.id, "read.db");
        let second = provider.create_generation().await.expect("create");
        assert!(
            second.id.starts_with("read.g") && second.id.ends_with(".db"),
            "{}",
            second.id
        );
        assert_eq!(
            provider.open_active().await.expect("still first").id,
            "read.db"
        );
        provider.activate(&second.id).await.expect("activate");
        drop(first);
        assert_eq!(
            SqliteReadStores::new(dir.path().join("read.db"))
                .active_name()
                .expect("pointer"),
            second.id
        );
        assert_eq!(provider.drop_inactive().await.expect("drop"), 1);
        assert!(!dir.path().join("read.db").exists());
        assert!(
            !dir.path().join("read.db.unsynced").exists(),
            "a dropped generation's unsynced-writes marker stays behind"
        );
        assert!(dir.path().join(&second.id).exists());
        assert!(provider.activate("../elsewhere.db").await.is_err());
        assert!(provider.activate("read.gmissing.db").await.is_err());
    }

    #[tokio::test]
    async fn the_inspector_reads_generations_without_creating_or_locking_anything() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("none").join("read.db");
        let inspector = SqliteReadStores::new(&missing);
        assert!(inspector.generation_ids().await.is_err(), "no directory");
        assert_eq!(
            inspector.checkpoint("read.db", "p").await.expect("no file"),
            None
        );
        assert!(
            inspector
                .parked("read.db", "p")
                .await
                .expect("none")
                .is_empty()
        );
        assert!(!inspector.rebuild_running().await.expect("no lock file"));
        assert!(!dir.path().join("none").exists(), "nothing was created");

        let base = dir.path().join("read.db");
        let serving = SqliteReadStores::new(&base);
        let active = serving.open_active().await.expect("open");
        let origin = Checkpoint::origin(1);
        let mut to = origin.clone();
        to.advance(&ordo_es::Position::new(0, 4, 0));
        active
            .store
            .commit("p", Default::default(), &origin, &to)
            .await
            .expect("commit");
        let inspector = SqliteReadStores::new(&base);
        assert_eq!(
            inspector.active_generation().await.expect("active"),
            "read.db"
        );
        assert_eq!(
            inspector.checkpoint("read.db", "p").await.expect("read"),
            Some(to)
        );
        assert!(inspector.checkpoint("../x.db", "p").await.is_err());
        assert!(
            !inspector
                .rebuild_running()
                .await
                .expect("held, one generation"),
            "a serving process without a second generation is not rebuilding"
        );
        let building = serving.create_generation().await.expect("create");
        assert_eq!(
            inspector.generation_ids().await.expect("list"),
            ["read.db".to_string(), building.id.clone()]
        );
        assert!(
            inspector
                .rebuild_running()
                .await
                .expect("held, two generations")
        );
        assert!(
            serving.open_active().await.is_ok(),
            "looking left the lock with its holder"
        );
        drop((active, building, serving));
        assert!(
            !inspector.rebuild_running().await.expect("no holder"),
            "a generation nobody holds is a leftover"
        );
    }

    #[tokio::test]
    async fn a_second_process_cannot_open_the_same_read_models() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = SqliteReadStores::new(dir.path().join("read.db"));
        first.open_active().await.expect("first");
        let second = SqliteReadStores::new(dir.path().join("read.db"));
        let err = second.open_active().await.expect_err("locked");
        assert!(
            err.to_string().contains("unavailable")
                || matches!(err, ReadStoreError::Unavailable(_))
        );
        drop(first);
        second.open_active().await.expect("free again");
    }
}
