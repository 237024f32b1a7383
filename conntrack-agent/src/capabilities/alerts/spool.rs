//! The on-disk spool: one directory per webhook, one file per pending delivery holding the
//! exact request body. A delivery is accepted only once its file is on disk, and its file is
//! removed only after the receiver answered for good, so neither a receiver that is down for
//! hours nor an agent restart loses an alert. The file is the truth; in-memory queues only
//! hold hints to it.

use anyhow::Context;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const SUFFIX: &str = ".json";
const TMP_SUFFIX: &str = ".tmp";

/// Spool entries within one nanosecond still sort in creation order.
static SEQ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// One pending delivery read back from the spool.
#[derive(Debug, Clone)]
pub struct SpoolEntry {
    pub path: PathBuf,
    pub delivery_id: String,
}

impl Spool {
    /// `root/<webhook>`; leftovers of interrupted writes are removed (their delivery was never
    /// accepted).
    pub fn open(root: &Path, webhook: &str) -> anyhow::Result<Self> {
        let dir = root.join(webhook);
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the alert spool {}", dir.display()))?;
        for e in fs::read_dir(&dir)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Self { dir })
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a delivery durably (temporary file, fsync, rename, fsync of the directory).
    /// Names sort in creation order: `<created ns>-<seq>-<delivery id>.json`.
    pub fn write(
        &self,
        created_ns: i64,
        delivery_id: &str,
        body: &[u8],
    ) -> anyhow::Result<PathBuf> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        let name = format!("{:020}-{seq:06}-{delivery_id}", created_ns.max(0));
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let path = self.dir.join(format!("{name}{SUFFIX}"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write()
            .with_context(|| format!("cannot write to the alert spool {}", self.dir.display()))?;
        Ok(path)
    }

    /// Pending deliveries, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<SpoolEntry>> {
        let mut out: Vec<SpoolEntry> = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read the alert spool {}", self.dir.display()))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.strip_suffix(SUFFIX)?;
                // <ns>-<seq>-<id>: the id is what follows the second dash.
                let mut parts = stem.splitn(3, '-');
                let (_, _, id) = (parts.next()?, parts.next()?, parts.next()?);
                Some(SpoolEntry {
                    path: e.path(),
                    delivery_id: id.to_string(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.list().map_or(0, |v| v.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_oldest_first_with_their_ids() {
        let root = tempfile::tempdir().unwrap();
        let s = Spool::open(root.path(), "ops").unwrap();
        let p2 = s.write(2_000, "b-id", b"{\"n\":2}").unwrap();
        let p1 = s.write(1_000, "a-id", b"{\"n\":1}").unwrap();
        let p3 = s.write(2_000, "c-id", b"{\"n\":3}").unwrap();
        let l = s.list().unwrap();
        let ids: Vec<&str> = l.iter().map(|e| e.delivery_id.as_str()).collect();
        assert_eq!(ids, ["a-id", "b-id", "c-id"]);
        assert_eq!(l[0].path, p1);
        assert_eq!(fs::read(&p2).unwrap(), b"{\"n\":2}");
        fs::remove_file(p3).unwrap();
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn interrupted_writes_are_dropped_on_open() {
        let root = tempfile::tempdir().unwrap();
        let s = Spool::open(root.path(), "ops").unwrap();
        fs::write(s.dir().join("00000000000000000001-000000-x.tmp"), b"{").unwrap();
        s.write(5, "kept", b"{}").unwrap();
        let s = Spool::open(root.path(), "ops").unwrap();
        let l = s.list().unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].delivery_id, "kept");
        assert_eq!(fs::read_dir(s.dir()).unwrap().count(), 1);
    }
}
