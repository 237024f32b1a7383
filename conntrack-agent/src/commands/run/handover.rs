//! Restart without loss (`run --pin-dir DIR`).
//!
//! The flow table, the event ring buffer and the counters are pinned in
//! `DIR/<schema>/`, with the TCX links and the running programs' tail-call table. On SIGTERM the
//! agent hands over: it logs nothing that is still open, saves the uids it gave
//! (`<log-dir>/handover.json`) and leaves the programs attached, so packets keep being accounted
//! and events queue in the pinned ring buffer while no agent runs. The next agent reuses the
//! maps, switches the links to its own programs atomically, restores the uids, drains the queued
//! events and adopts every connection in the table: each is logged once, by whichever agent sees
//! it end. SIGINT (or `--no-handover`) stops for good: everything is logged and the pins removed.
//!
//! `<schema>` is derived from the layout of the types the maps hold, so an agent whose layout
//! differs never reads another's maps: it detaches and removes them, says so, and starts fresh.

use anyhow::{Context, Result, bail};
use conntrack_common::conn::Conn;
use conntrack_common::event::{ConnChange, Snapshot, TableFull};
use conntrack_common::history::History;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::PacketMeta;
use conntrack_common::stats::STAT_COUNT;
use conntrack_common::tcp::Endpoint;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};

/// Bumped by hand when the meaning of pinned data changes without its layout changing (flag
/// bits, stat indices, event kinds): the layout hash below catches the rest.
pub const SCHEMA_REVISION: u32 = 1;

/// A hash of the sizes and field offsets of what the pinned maps hold.
pub const LAYOUT_HASH: u64 = layout_hash();

const fn layout_hash() -> u64 {
    let parts: [usize; 25] = [
        size_of::<FlowKey>(),
        size_of::<Conn>(),
        size_of::<Endpoint>(),
        size_of::<History>(),
        size_of::<PacketMeta>(),
        size_of::<ConnChange>(),
        size_of::<TableFull>(),
        offset_of!(Conn, orig_addr),
        offset_of!(Conn, resp_addr),
        offset_of!(Conn, start_ns),
        offset_of!(Conn, last_ns),
        offset_of!(Conn, orig),
        offset_of!(Conn, resp),
        offset_of!(Conn, history),
        offset_of!(Conn, orig_port),
        offset_of!(Conn, resp_port),
        offset_of!(Conn, flags),
        offset_of!(Conn, proto),
        offset_of!(Conn, lock),
        offset_of!(Conn, thr_armed),
        offset_of!(Conn, thr),
        offset_of!(ConnChange, key),
        offset_of!(ConnChange, last_ns),
        offset_of!(ConnChange, orient),
        offset_of!(Snapshot, conn),
    ];
    // FNV-1a over the numbers and the counter count.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i <= parts.len() {
        let v = if i < parts.len() {
            parts[i] as u64
        } else {
            STAT_COUNT as u64
        };
        let mut b = 0;
        while b < 8 {
            h ^= (v >> (8 * b)) & 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
            b += 1;
        }
        i += 1;
    }
    h
}

/// The pin subdirectory of this build: `v<revision>-<layout hash>`.
pub fn schema_name() -> String {
    format!("v{SCHEMA_REVISION}-{:016x}", LAYOUT_HASH)
}

/// True for a directory name another build would use for its pins.
fn is_schema_name(name: &str) -> bool {
    name.strip_prefix('v')
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(rev, hash)| {
            rev.parse::<u32>().is_ok()
                && hash.len() == 16
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// statfs magic of a BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid out buffer; `c` is a valid C string.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// The pin directory of this schema, ready for use.
pub struct PinDir {
    pub root: PathBuf,
    pub dir: PathBuf,
    /// `root`, flocked: one agent per pin directory (released when the agent exits).
    _lock: std::fs::File,
}

/// How long a starting agent waits for the agent that holds the pin directory to exit (a
/// restart where the new agent starts before the old one is gone).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes the pin directory's lock if no agent holds it (None if one does).
fn try_lock(root: &Path) -> Result<Option<std::fs::File>> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(Some(f));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(e).with_context(|| format!("locking {}", root.display()));
    }
    Ok(None)
}

/// Takes the pin directory's lock, waiting up to [`LOCK_WAIT`] for a predecessor to exit.
fn lock(root: &Path) -> Result<std::fs::File> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut said = false;
    loop {
        if let Some(f) = try_lock(root)? {
            return Ok(f);
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "another agent is running with --pin-dir {} (still after {} s): stop it \
                (SIGTERM hands over to this one) or use another directory",
                root.display(),
                LOCK_WAIT.as_secs()
            );
        }
        if !said {
            eprintln!(
                "conntrack-agent: waiting for the agent running with --pin-dir {} to exit",
                root.display()
            );
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

impl PinDir {
    /// Creates `root/<schema>` (checking that `root` is on a BPF filesystem) and removes the
    /// pins of other schemas, detaching their programs, with a warning.
    pub fn prepare(root: &Path) -> Result<PinDir> {
        if !root.exists() {
            let parent = root.parent().unwrap_or(Path::new("/"));
            if !is_bpffs(parent) {
                bail!(
                    "--pin-dir {}: {} is not a BPF filesystem: mount one (`mount -t bpf bpf \
                    /sys/fs/bpf`, or `BPFFS` in a container's mounts) or choose a directory on one",
                    root.display(),
                    parent.display()
                );
            }
            std::fs::create_dir_all(root).with_context(|| {
                format!(
                    "creating {} (a non-root agent needs a directory it owns there: \
                    `install -d -o USER {}` as root)",
                    root.display(),
                    root.display()
                )
            })?;
        }
        if !is_bpffs(root) {
            bail!(
                "--pin-dir {} is not on a BPF filesystem: mount one (`mount -t bpf bpf \
                /sys/fs/bpf`) or choose a directory on one",
                root.display()
            );
        }
        let lock = lock(root)?;
        let schema = schema_name();
        for entry in std::fs::read_dir(root)
            .with_context(|| format!("reading {}", root.display()))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == schema || !is_schema_name(&name) {
                continue;
            }
            eprintln!(
                "conntrack-agent: {} holds pins of schema {name}, written by an agent whose \
                connection layout differs from this one's ({schema}): they cannot be read. \
                Detaching its programs and starting fresh; the connections it left open are \
                not logged (to log them, stop that version for good with SIGINT before \
                upgrading)",
                root.display()
            );
            discard(&entry.path())?;
        }
        let dir = root.join(&schema);
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "creating {} (the agent's user needs write access to {}: `install -d -o USER` \
                it as root)",
                dir.display(),
                root.display()
            )
        })?;
        Ok(PinDir {
            root: root.to_path_buf(),
            dir,
            _lock: lock,
        })
    }

    /// True if a predecessor left a flow table here.
    pub fn has_predecessor(&self) -> bool {
        self.dir.join("FLOWS").exists()
    }

    /// The pinned flow table's kernel id (ties a handover state file to its table).
    pub fn flows_id(&self) -> Option<u32> {
        aya::maps::MapInfo::from_pin(self.dir.join("FLOWS"))
            .ok()
            .map(|i| i.id())
    }

    /// The pinned flow table's capacity.
    pub fn flows_capacity(&self) -> Option<u32> {
        aya::maps::MapInfo::from_pin(self.dir.join("FLOWS"))
            .ok()
            .map(|i| i.max_entries())
    }

    /// Detaches the pinned links of interfaces not in `ifaces` (a predecessor monitored more).
    pub fn drop_other_links(&self, ifaces: &[String]) -> Result<()> {
        let keep: Vec<String> = ifaces
            .iter()
            .flat_map(|i| {
                [
                    crate::datapath::kernel::link_pin_name(i, "conntrack_ingress"),
                    crate::datapath::kernel::link_pin_name(i, "conntrack_egress"),
                ]
            })
            .collect();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("link_") && !keep.contains(&name) {
                eprintln!("conntrack-agent: detaching {name} (interface no longer monitored)");
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Stop for good: removes every pin of this schema (maps are freed once the last program
    /// using them is gone). The root stays: an agent waiting for the lock holds it open.
    pub fn remove(&self) -> Result<()> {
        discard(&self.dir)
    }
}

/// `detach --pin-dir`: removes the pins a stopped agent left under `root` (every schema's),
/// which detaches its programs. With `ifaces`, only those interfaces' links go, and the maps
/// with the last link. Returns the pins removed. Refused while an agent runs with `root`.
pub fn remove_pins(root: &Path, ifaces: &[String]) -> Result<Vec<PathBuf>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let Some(_lock) = try_lock(root)? else {
        bail!(
            "an agent is running with --pin-dir {}: stop it for good with SIGINT (it detaches \
            its programs and removes its pins) instead",
            root.display()
        );
    };
    let links: Vec<String> = ifaces
        .iter()
        .flat_map(|i| {
            [
                crate::datapath::kernel::link_pin_name(i, "conntrack_ingress"),
                crate::datapath::kernel::link_pin_name(i, "conntrack_egress"),
            ]
        })
        .collect();
    let mut removed = Vec::new();
    let mut schemas: Vec<PathBuf> = std::fs::read_dir(root)
        .with_context(|| format!("reading {}", root.display()))?
        .flatten()
        .filter(|e| is_schema_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    schemas.sort();
    for dir in schemas {
        let mut pins: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        pins.sort();
        let is_link = |p: &PathBuf| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
        };
        let chosen = |p: &PathBuf| {
            links.is_empty()
                || p.file_name()
                    .is_some_and(|n| links.iter().any(|l| n == l.as_str()))
        };
        for pin in pins.iter().filter(|p| is_link(p) && chosen(p)) {
            std::fs::remove_file(pin).with_context(|| format!("removing {}", pin.display()))?;
            removed.push(pin.clone());
        }
        // The maps and tail-call table go with the last link: a generation still attached
        // elsewhere keeps what its programs use.
        let links_left = pins.iter().any(|p| is_link(p) && p.exists());
        if !links_left {
            for pin in pins.iter().filter(|p| p.exists()) {
                std::fs::remove_file(pin).with_context(|| format!("removing {}", pin.display()))?;
                removed.push(pin.clone());
            }
            std::fs::remove_dir(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(removed)
}

/// Removes every pin in `dir` and `dir` itself. Removing a link's pin detaches it.
fn discard(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
    {
        std::fs::remove_file(entry.path())
            .with_context(|| format!("removing {}", entry.path().display()))?;
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// What an agent that handed over leaves for its successor: the uids it gave to connections
/// still open. (The kernel's table has the rest.)
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct HandoverState {
    /// [`schema_name`] of the writer.
    pub schema: String,
    /// Kernel id of the flow table the uids belong to.
    pub flows_id: u32,
    pub conns: Vec<SavedConn>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct SavedConn {
    /// The flow key's bytes, hex.
    pub key: String,
    /// `Conn::start_ns`: tells this connection from a later one on the same key.
    pub start_ns: u64,
    pub uid: String,
    /// What the capabilities need to log its `service` as the predecessor would (the
    /// service capability's decision so far), if anything; absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

const STATE_FILE: &str = "handover.json";

pub fn state_path(log_dir: &Path) -> PathBuf {
    log_dir.join(STATE_FILE)
}

fn key_bytes(key: &FlowKey) -> &[u8] {
    // SAFETY: FlowKey is repr(C) plain data without padding (it is a BPF map key, which the
    // kernel compares bytewise).
    unsafe {
        std::slice::from_raw_parts((key as *const FlowKey).cast::<u8>(), size_of::<FlowKey>())
    }
}

pub fn key_to_hex(key: &FlowKey) -> String {
    key_bytes(key).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn key_from_hex(s: &str) -> Option<FlowKey> {
    if s.len() != 2 * size_of::<FlowKey>() || !s.is_ascii() {
        return None;
    }
    let mut key = FlowKey::default();
    // SAFETY: as in `key_bytes`; every byte pattern is a valid FlowKey (integers only).
    let out = unsafe {
        std::slice::from_raw_parts_mut(
            (&mut key as *mut FlowKey).cast::<u8>(),
            size_of::<FlowKey>(),
        )
    };
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

impl HandoverState {
    /// Writes the state atomically (temporary file, then rename).
    pub fn save(&self, log_dir: &Path) -> Result<()> {
        let path = state_path(log_dir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads and removes the state a predecessor left, if it belongs to this schema and to the
    /// flow table `flows_id` (a state file left by an older run is ignored, with a warning).
    pub fn take(log_dir: &Path, flows_id: Option<u32>) -> Option<HandoverState> {
        let path = state_path(log_dir);
        let text = std::fs::read(&path).ok()?;
        let _ = std::fs::remove_file(&path);
        let state: HandoverState = match serde_json::from_slice(&text) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("{}: {e}; uids are not restored", path.display());
                return None;
            }
        };
        if state.schema != schema_name() || Some(state.flows_id) != flows_id {
            eprintln!(
                "conntrack-agent: {} belongs to another flow table or schema: ignored (open \
                connections get new uids)",
                path.display()
            );
            return None;
        }
        Some(state)
    }

    /// The saved connections by key (those whose key reads back).
    pub fn entries(&self) -> impl Iterator<Item = (FlowKey, &SavedConn)> {
        self.conns
            .iter()
            .filter_map(|c| Some((key_from_hex(&c.key)?, c)))
    }
}

/// What `--pin-dir` does at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Leave the programs attached and the connections to a successor.
    Handover,
    /// Log everything, detach, remove the pins.
    ForGood,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_name_carries_revision_and_layout() {
        let s = schema_name();
        assert!(is_schema_name(&s), "{s}");
        assert!(s.starts_with(&format!("v{SCHEMA_REVISION}-")));
        assert!(!is_schema_name("link_eth0_ingress"));
        assert!(!is_schema_name("v1-xyz"));
        assert!(is_schema_name("v7-0123456789abcdef"));
    }

    #[test]
    fn flow_keys_round_trip_through_hex() {
        let key = FlowKey {
            addr_a: [1; 16],
            addr_b: [2; 16],
            port_a: 40000,
            port_b: 80,
            proto: 6,
            ..FlowKey::default()
        };
        let hex = key_to_hex(&key);
        assert_eq!(key_from_hex(&hex), Some(key));
        assert_eq!(key_from_hex("00"), None);
    }

    #[test]
    fn state_of_another_table_or_schema_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = HandoverState {
            schema: schema_name(),
            flows_id: 42,
            conns: vec![
                SavedConn {
                    key: key_to_hex(&FlowKey::default()),
                    start_ns: 5,
                    uid: "Cabc".into(),
                    service: Some("tcp:http".into()),
                },
                SavedConn {
                    key: key_to_hex(&FlowKey {
                        port_a: 1,
                        ..FlowKey::default()
                    }),
                    start_ns: 6,
                    uid: "Cdef".into(),
                    service: None,
                },
            ],
        };
        state.save(dir.path()).unwrap();
        let back = HandoverState::take(dir.path(), Some(42)).expect("same table");
        assert_eq!(back, state);
        // A file an older agent wrote (no service) still reads.
        let old = format!(
            r#"{{"schema":"{}","flows_id":42,"conns":[{{"key":"{}","start_ns":5,"uid":"Cabc"}}]}}"#,
            schema_name(),
            key_to_hex(&FlowKey::default())
        );
        std::fs::write(state_path(dir.path()), old).unwrap();
        let back = HandoverState::take(dir.path(), Some(42)).expect("an older file");
        assert_eq!(back.conns[0].service, None);
        assert_eq!(back.conns[0].uid, "Cabc");
        assert!(!state_path(dir.path()).exists(), "taken once");
        state.save(dir.path()).unwrap();
        assert!(HandoverState::take(dir.path(), Some(43)).is_none());
        let other = HandoverState {
            schema: "v0-0000000000000000".into(),
            ..state
        };
        other.save(dir.path()).unwrap();
        assert!(HandoverState::take(dir.path(), Some(42)).is_none());
    }

    #[test]
    fn a_pin_dir_off_bpffs_is_refused_with_instructions() {
        let dir = tempfile::tempdir().unwrap();
        let err = PinDir::prepare(&dir.path().join("conntrack"))
            .err()
            .expect("tmp is not bpffs");
        let msg = format!("{err:#}");
        assert!(msg.contains("not a BPF filesystem"), "{msg}");
        assert!(msg.contains("mount -t bpf"), "{msg}");
    }
}
