//! Reading Caffe's LMDB databases (`convert_imageset`, Python `lmdb` writers): records in key
//! order, wrapping around to the first record at the end, as Caffe's DataLayer cursor does.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use lmdb::{Cursor, Database, Environment, EnvironmentFlags, Transaction};

/// A read cursor over an LMDB directory that survives between batches: each `read` call opens
/// one read transaction and continues after the last record the previous call consumed.
pub struct LmdbCursor {
    env: Environment,
    db: Database,
    path: PathBuf,
    /// Key of the next record to read; `None` means the first record.
    next_key: Option<Vec<u8>>,
    entries: usize,
}

fn lmdb_err(path: &Path, what: &str, e: lmdb::Error) -> anyhow::Error {
    anyhow!("LMDB {}: {what}: {e}", path.display())
}

impl LmdbCursor {
    /// Opens `path` (a directory holding data.mdb) read-only. No lock file is used, so
    /// read-only folders work; writers must not change the database while crema reads it.
    pub fn open(path: &Path) -> Result<LmdbCursor> {
        if !path.exists() {
            bail!(
                "LMDB source {} does not exist (a relative data_param.source is resolved against \
                 the current directory, as Caffe does)",
                path.display()
            );
        }
        if !path.is_dir() {
            bail!(
                "LMDB source {} is a file, not a directory: give the folder that holds data.mdb",
                path.display()
            );
        }
        if !path.join("data.mdb").is_file() {
            bail!(
                "LMDB source {} has no data.mdb: it is not an LMDB database",
                path.display()
            );
        }
        let env = Environment::new()
            .set_flags(
                EnvironmentFlags::READ_ONLY | EnvironmentFlags::NO_LOCK | EnvironmentFlags::NO_TLS,
            )
            .open(path)
            .map_err(|e| lmdb_err(path, "cannot open the database", e))?;
        let db = env
            .open_db(None)
            .map_err(|e| lmdb_err(path, "cannot open the main database", e))?;
        let entries = env
            .stat()
            .map_err(|e| lmdb_err(path, "cannot read its statistics", e))?
            .entries();
        if entries == 0 {
            bail!("LMDB {} holds no records", path.display());
        }
        Ok(LmdbCursor {
            env,
            db,
            path: path.to_path_buf(),
            next_key: None,
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Calls `f(key, value)` for the current record without consuming it (shape inference).
    pub fn peek<T>(&self, f: impl FnOnce(&[u8], &[u8]) -> Result<T>) -> Result<T> {
        let txn = self
            .env
            .begin_ro_txn()
            .map_err(|e| lmdb_err(&self.path, "cannot begin a read", e))?;
        let mut cur = txn
            .open_ro_cursor(self.db)
            .map_err(|e| lmdb_err(&self.path, "cannot open a cursor", e))?;
        let mut it = match &self.next_key {
            Some(k) => cur.iter_from(k),
            None => cur.iter_start(),
        };
        match it.next() {
            Some(Ok((k, v))) => f(k, v),
            Some(Err(e)) => Err(lmdb_err(&self.path, "read failed", e)),
            None => bail!("LMDB {} holds no records", self.path.display()),
        }
    }

    /// Consumes `n` records in key order, calling `f(index_in_call, key, value)` for each and
    /// wrapping to the first record after the last (logging Caffe's restart line).
    pub fn read(
        &mut self,
        n: usize,
        mut f: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let path = self.path.clone();
        let txn = self
            .env
            .begin_ro_txn()
            .map_err(|e| lmdb_err(&path, "cannot begin a read", e))?;
        let mut cur = txn
            .open_ro_cursor(self.db)
            .map_err(|e| lmdb_err(&path, "cannot open a cursor", e))?;
        let mut it = match &self.next_key {
            Some(k) => cur.iter_from(k),
            None => cur.iter_start(),
        };
        let mut item = it.next();
        if item.is_none() {
            // The saved key is past the end (cannot happen with an unchanged database).
            it = cur.iter_start();
            item = it.next();
        }
        for i in 0..n {
            let (k, v) = match item {
                Some(Ok(kv)) => kv,
                Some(Err(e)) => return Err(lmdb_err(&path, "read failed", e)),
                None => bail!("LMDB {} holds no records", path.display()),
            };
            f(i, k, v)?;
            item = it.next();
            if item.is_none() {
                crate::info!("Restarting data prefetching from start.");
                it = cur.iter_start();
                item = it.next();
            }
        }
        self.next_key = match item {
            Some(Ok((k, _))) => Some(k.to_vec()),
            Some(Err(e)) => return Err(lmdb_err(&path, "read failed", e)),
            None => None,
        };
        Ok(())
    }
}

/// Every (key, value) of an LMDB in key order (tools and tests).
pub fn read_all(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = LmdbCursor::open(path)?;
    let txn = c
        .env
        .begin_ro_txn()
        .map_err(|e| lmdb_err(path, "cannot begin a read", e))?;
    let mut cur = txn
        .open_ro_cursor(c.db)
        .map_err(|e| lmdb_err(path, "cannot open a cursor", e))?;
    let mut out = Vec::with_capacity(c.entries);
    for item in cur.iter_start() {
        let (k, v) = item.map_err(|e| lmdb_err(path, "read failed", e))?;
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}
