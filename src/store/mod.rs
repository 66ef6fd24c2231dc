//! Persistence on RocksDB: one writer thread with group commit, tables as
//! column families, field encryption, de-duplication, retention, read-back.
//!
//! Shards never touch the database on the ingest path. They build a record
//! (JSON, encrypted fields sealed) and hand it to the writer thread over a
//! bounded crossbeam channel (each shard's [`StoreQueue`], which owns the
//! back-pressure: park, retry, pause reading). The writer drains
//! what is queued, assigns insertIds, writes one `WriteBatch` (synced per the
//! durability mode) and only then reports every record's insertId through
//! the [`CompletionSink`] it was started with (the server routes it to the
//! record's shard, which sends `data_response`) — an acknowledged record is
//! on disk. The store imports nothing above it: not the shard, not the
//! server. See `docs/storage.md`.

pub mod crypto;
pub mod keys;
mod queue;
mod read;
pub mod record;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::metrics::StoreMetrics;

pub use crate::config::Durability;

pub(crate) use queue::StoreQueue;
pub use read::{Page, Record, Scan, Skipped, TableStats};
pub(crate) use writer::{Completion, CompletionSink, DedupKey, WriteMsg, WriteTask};
#[cfg(test)]
pub(crate) use writer::{StoreAck, WriteError};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB reported an error.
    #[error("database error: {0}")]
    Db(#[from] rocksdb::Error),
    /// The table does not exist.
    #[error("unknown table `{0}`")]
    UnknownTable(String),
    /// A stored record could not be decoded.
    #[error("corrupt record {id} in table {table}: {message}")]
    Corrupt {
        /// Table.
        table: String,
        /// insertId.
        id: u64,
        /// Why.
        message: String,
    },
    /// Decryption failed.
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// Bad query arguments.
    #[error("{0}")]
    Query(String),
    /// A file-system operation on the data directory failed.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// What was being done (`create`, ...).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Spawn(std::io::Error),
    /// A reader (`wshandler query`, `stats`) was pointed at a directory
    /// holding no database: it does not exist, or has no RocksDB `CURRENT`
    /// file (the server has never run there).
    #[error("no data directory at {}", .dir.display())]
    NoDataDir {
        /// The directory looked in.
        dir: PathBuf,
    },
    /// Another process (or another `Store` in this one) holds the
    /// database's lock: RocksDB allows one primary per directory.
    #[error("data directory {} is in use by another wshandler process", .dir.display())]
    DataDirInUse {
        /// The locked directory.
        dir: PathBuf,
    },
}

/// Is `e` RocksDB refusing to open because another primary holds the
/// directory's `LOCK` file? Its texts are `While lock file: <dir>/LOCK:
/// Resource temporarily unavailable` (another process) and `lock hold by
/// current process ... <dir>/LOCK: No locks available` (this one); both
/// name the file, which no other open error does.
fn is_lock_error(e: &rocksdb::Error) -> bool {
    e.kind() == rocksdb::ErrorKind::IOError && e.as_ref().contains("/LOCK:")
}

/// Options for opening the store (from the server config).
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory.
    pub dir: PathBuf,
    /// Tables (column families) to have: the default table first.
    pub tables: Vec<String>,
    /// Durability of an acknowledgement.
    pub durability: Durability,
    /// Most records per write batch.
    pub batch_max: usize,
    /// Most bytes per write batch.
    pub batch_bytes: usize,
    /// Capacity of the shards → writer channel, in records.
    pub queue: usize,
    /// How long (deviceId, messageId) pairs are remembered.
    pub dedup_window: Duration,
    /// Delete records older than this, per table (`None`: keep forever).
    pub retention: Vec<(String, Option<Duration>)>,
    /// RocksDB memtable size per column family, bytes.
    pub write_buffer_size: usize,
}

/// An open database (primary, read-only or secondary).
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<DB>,
    tables: Vec<String>,
}

fn cf_options() -> Options {
    let mut o = Options::default();
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    o
}

impl Store {
    /// Open (creating if needed) the primary database with every table.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| StoreError::Io {
            what: "create",
            path: cfg.dir.clone(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_write_buffer_size(cfg.write_buffer_size);
        opts.set_max_background_jobs(2);
        let mut names: Vec<String> = match DB::list_cf(&opts, &cfg.dir) {
            Ok(existing) => existing,
            Err(_) => vec!["default".into()],
        };
        for t in cfg
            .tables
            .iter()
            .map(String::as_str)
            .chain([keys::META_CF, keys::DEDUP_CF])
        {
            if !names.iter().any(|n| n == t) {
                names.push(t.to_owned());
            }
        }
        let cfs = names.iter().map(|n| {
            let mut o = cf_options();
            o.set_write_buffer_size(cfg.write_buffer_size);
            ColumnFamilyDescriptor::new(n, o)
        });
        let db = DB::open_cf_descriptors(&opts, &cfg.dir, cfs).map_err(|e| {
            if is_lock_error(&e) {
                StoreError::DataDirInUse {
                    dir: cfg.dir.clone(),
                }
            } else {
                StoreError::Db(e)
            }
        })?;
        Ok(Store {
            db: Arc::new(db),
            tables: table_names(&names),
        })
    }

    /// Open a secondary instance that follows a primary another process
    /// (the server) has open; for `wshandler query` and `stats`.
    ///
    /// Fails with [`StoreError::NoDataDir`] if `dir` holds no database.
    pub fn open_secondary(dir: &Path) -> Result<Store, StoreError> {
        // Checked here rather than read from RocksDB's error, which quotes
        // the missing `CURRENT` path (and is easy to misread as corruption).
        if !dir.join("CURRENT").is_file() {
            return Err(StoreError::NoDataDir {
                dir: dir.to_owned(),
            });
        }
        let opts = Options::default();
        let names = DB::list_cf(&opts, dir)?;
        let secondary =
            std::env::temp_dir().join(format!("wshandler-secondary-{}", std::process::id()));
        let mut o = Options::default();
        o.set_max_open_files(-1);
        let db = DB::open_cf_as_secondary(&o, dir, &secondary, &names)?;
        db.try_catch_up_with_primary()?;
        Ok(Store {
            db: Arc::new(db),
            tables: table_names(&names),
        })
    }

    /// The tables (column families holding records).
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    pub(crate) fn db(&self) -> &Arc<DB> {
        &self.db
    }
}

fn table_names(cfs: &[String]) -> Vec<String> {
    cfs.iter()
        .filter(|n| !matches!(n.as_str(), "default" | keys::META_CF | keys::DEDUP_CF))
        .cloned()
        .collect()
}

/// The shards' side of the writer: a bounded channel and the bitmap of
/// shards waiting for room in it. `Send + Sync`; each shard wraps it in its
/// own [`StoreQueue`].
#[derive(Debug, Clone)]
pub(crate) struct StoreHandle {
    tx: crossbeam_channel::Sender<WriteMsg>,
    store: Store,
    /// Shards (bit `shard % 64`) with records parked because the queue was
    /// full; the writer wakes them after its next batch.
    blocked: Arc<AtomicU64>,
    /// The writer's counters.
    metrics: Arc<StoreMetrics>,
}

impl StoreHandle {
    /// The database, for reads.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The writer's counters.
    pub(crate) fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Why the store cannot take records now, if it cannot: the writer
    /// stopped, or its last write batch failed.
    pub(crate) fn unwritable(&self) -> Option<&'static str> {
        if self.metrics.stopped.load(Ordering::Acquire) {
            Some("the writer has stopped")
        } else if self.metrics.failing.load(Ordering::Acquire) {
            Some("the last write batch failed")
        } else {
            None
        }
    }

    /// Records in the writer's channel now.
    pub(crate) fn queued(&self) -> usize {
        self.tx.len()
    }

    /// A RocksDB integer property summed over the column families
    /// (e.g. `rocksdb.total-sst-files-size`); `None` if unreadable.
    pub(crate) fn db_property(&self, name: &str) -> Option<u64> {
        let db = self.store.db();
        let mut total = None;
        for cf in ["default", keys::META_CF, keys::DEDUP_CF]
            .into_iter()
            .map(str::to_owned)
            .chain(self.store.tables().iter().cloned())
        {
            let Some(h) = db.cf_handle(&cf) else { continue };
            if let Ok(Some(v)) = db.property_int_value_cf(h, name) {
                total = Some(total.unwrap_or(0) + v);
            }
        }
        total
    }

    /// Ask the writer to wake `shard` after its next batch.
    fn mark_blocked(&self, shard: usize) {
        self.blocked.fetch_or(1 << (shard % 64), Ordering::AcqRel);
    }

    /// Queue a record; gives it back if the queue is full.
    // The task comes back by value so the shard can park it; boxing it
    // would cost an allocation per record on the ingest path.
    #[allow(clippy::result_large_err)]
    fn try_send(&self, t: WriteTask) -> Result<(), WriteTask> {
        match self.tx.try_send(WriteMsg::Write(t)) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(WriteMsg::Write(t)))
            | Err(crossbeam_channel::TrySendError::Disconnected(WriteMsg::Write(t))) => Err(t),
            Err(_) => unreachable!("only writes are sent here"),
        }
    }
}

/// A running store: the handle shards use and the writer thread.
#[derive(Debug)]
pub(crate) struct StoreRuntime {
    handle: StoreHandle,
    thread: std::thread::JoinHandle<()>,
}

impl StoreRuntime {
    /// The shards' side.
    pub(crate) fn handle(&self) -> &StoreHandle {
        &self.handle
    }

    /// Let the writer commit what is queued, then join it.
    pub(crate) fn shutdown(self) {
        let _ = self.handle.tx.send(WriteMsg::Shutdown);
        let _ = self.thread.join();
    }
}

/// Open the store and start its writer for `shards` shards: the channel,
/// the back-pressure bitmap and the thread, built in one place. The writer
/// reports finished records to `sink`.
pub(crate) fn start(
    cfg: StoreConfig,
    shards: usize,
    sink: CompletionSink,
) -> Result<StoreRuntime, StoreError> {
    let store = Store::open(&cfg)?;
    let (tx, rx) = crossbeam_channel::bounded(cfg.queue);
    let blocked = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(StoreMetrics::default());
    let thread = spawn_writer(
        store.clone(),
        cfg,
        rx,
        (shards, sink),
        blocked.clone(),
        metrics.clone(),
    )?;
    Ok(StoreRuntime {
        handle: StoreHandle {
            tx,
            store,
            blocked,
            metrics,
        },
        thread,
    })
}

use writer::spawn_writer;
