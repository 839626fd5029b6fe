//! The key store and the master key, as the configuration names them (docs/privacy.md).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use ordo_domain::privacy::ring::CacheBounds;
use ordo_domain::privacy::{KeyRing, KeyStore, MasterKey, SecretKey, Subject};

use crate::config::{self, StoreArgs};
use crate::{is_postgres, sqlite_path};

/// The environment variable that may hold the master key itself.
pub const MASTER_KEY_ENV: &str = "ORDO_MASTER_KEY";

/// How the key ring caches, and how long an erasure waits for other processes' caches.
#[derive(Clone, Copy, Debug)]
pub struct KeyCaching {
    pub bounds: CacheBounds,
    /// How long after destroying keys an erasure waits before it rebuilds the read
    /// models: the time other processes may still hold the keys in their caches. Zero on
    /// the embedded store, which one process owns.
    pub settle: Duration,
}

/// Opens the key store `args` names.
pub async fn open_key_store(args: &StoreArgs) -> anyhow::Result<(Arc<dyn KeyStore>, KeyCaching)> {
    let url = args.key_store_url();
    let shared = KeyCaching {
        bounds: CacheBounds::default(),
        settle: CacheBounds::default().ttl + Duration::from_millis(500),
    };
    if let Some(path) = sqlite_path(&url) {
        let store = ordo_sqlite::SqliteKeys::open(Path::new(path))
            .with_context(|| format!("cannot open the embedded key store at {path}"))?;
        // One process owns the embedded stores: its cache is never stale.
        let caching = KeyCaching {
            bounds: CacheBounds {
                ttl: Duration::from_secs(3600),
                ..CacheBounds::default()
            },
            settle: Duration::ZERO,
        };
        return Ok((Arc::new(store), caching));
    }
    if is_postgres(&url) {
        let store = ordo_postgres::PgKeys::connect(&url)
            .await
            .with_context(|| {
                format!(
                    "cannot open the PostgreSQL key store at {}",
                    config::redact(&url)
                )
            })?;
        return Ok((Arc::new(store), shared));
    }
    if url.starts_with("redis://") || url.starts_with("redis+cluster://") {
        let store = ordo_redis::RedisKeys::connect(&url)
            .await
            .with_context(|| {
                format!(
                    "cannot open the Redis key store at {}",
                    config::redact(&url)
                )
            })?;
        return Ok((Arc::new(store), shared));
    }
    bail!(
        "unsupported --key-store {}: use sqlite://PATH, redis://HOST:PORT, redis+cluster://HOST:PORT[,HOST:PORT...] or postgres://...",
        config::redact(&url)
    )
}

fn read_key_file(path: &Path) -> anyhow::Result<SecretKey> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the master key file {}", path.display()))?,
    );
    SecretKey::from_hex(&text).with_context(|| format!("the master key file {}", path.display()))
}

/// Writes `key` to `path`, readable by its owner only, unless another process sharing
/// the data dir wrote one first: then that one is the key. The file appears whole or not
/// at all (written aside, synced, then linked into place, which fails if it exists).
fn write_key_file(path: &Path, key: SecretKey) -> anyhow::Result<(SecretKey, bool)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let aside = dir.join(format!(".master.key.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&aside).and_then(|mut file| {
        let mut text = key.to_hex();
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&aside, path));
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => Ok((key, true)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((read_key_file(path)?, false))
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot write the master key file {}", path.display()))
        }
    }
}

/// The master key: ORDO_MASTER_KEY, else the file `--master-key-file` names, else
/// `master.key` in the data dir. Only there, and only for a key store that holds no key
/// yet, is a missing key generated (with a warning to back it up): a store that holds
/// keys needs the master key it was set up with.
pub async fn master_key(args: &StoreArgs, store: &dyn KeyStore) -> anyhow::Result<MasterKey> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        let key = SecretKey::from_hex(&zeroize::Zeroizing::new(text)).context(MASTER_KEY_ENV)?;
        return Ok(MasterKey::new(key));
    }
    if let Some(path) = &args.master_key_file {
        return Ok(MasterKey::new(read_key_file(path)?));
    }
    let path: PathBuf = args.data_dir.join("master.key");
    if path.exists() {
        return Ok(MasterKey::new(read_key_file(&path)?));
    }
    let set_up = store
        .live_key(&Subject::INDEX)
        .await
        .context("cannot read the key store")?
        .is_some();
    if set_up {
        bail!(
            "the key store {} holds keys, but no master key was given: set {MASTER_KEY_ENV} or \
             --master-key-file (ORDO_MASTER_KEY_FILE) to the master key it was set up with \
             (without it the customers' personal data cannot be read)",
            config::redact(&args.key_store_url())
        );
    }
    let (key, generated) = write_key_file(&path, SecretKey::generate()?)?;
    if !generated {
        return Ok(MasterKey::new(key));
    }
    tracing::warn!(
        path = %path.display(),
        fingerprint = %key.fingerprint(),
        "generated a new master key for a new key store: back it up, apart from the data; \
         if it is lost, every customer's personal data is lost with it (docs/privacy.md)"
    );
    Ok(MasterKey::new(key))
}

/// The key ring over the configured key store and master key.
pub async fn open_ring(args: &StoreArgs) -> anyhow::Result<(Arc<KeyRing>, KeyCaching)> {
    let (store, caching) = open_key_store(args).await?;
    let master = master_key(args, store.as_ref()).await?;
    let previous = match &args.previous_master_key_file {
        Some(path) => vec![MasterKey::new(read_key_file(path)?)],
        None => Vec::new(),
    };
    let ring = KeyRing::open(store, master, previous, caching.bounds)
        .await
        .context("cannot open the key store")?;
    Ok((Arc::new(ring), caching))
}
