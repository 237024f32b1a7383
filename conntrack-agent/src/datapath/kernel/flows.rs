//! The `FLOWS` map handed to the tracker ([`FlowMap`]), with content extraction's maps, and
//! the live [`Datapath`]: the program updates connections itself, the agent reads, removes and
//! commands them.

use super::control::{ControlProgram, bpf_syscall};
use super::{
    CONFIG_CONTENTS_CAP, CONFIG_CONTENTS_RATE, CONFIG_FLAGS, CONFIG_L2, CONFIG_TUNNEL_MASK,
    CONFIG_TUNNEL_SHIFT, MAX_TUNNEL_DEPTH,
};
use crate::datapath::{ContentChunk, Datapath, DatapathError, ThresholdError};
use aya::maps::{Array, HashMap, MapData, RingBuf};
use conntrack_common::conn::Conn;
use conntrack_common::contents::{self, ContentCounters, ContentHeader};
use conntrack_common::event::Event;
use conntrack_common::key::FlowKey;
use conntrack_common::threshold::ThresholdCommand;
use std::os::fd::{AsRawFd, OwnedFd};

/// `union bpf_attr` as the map element commands read it.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` as the map batch commands read it.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Connections per BPF_MAP_LOOKUP_AND_DELETE_BATCH call (keys and values: about 2 MB).
const DRAIN_BATCH: usize = 4096;

const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
/// The kernel's internal "operation not supported" (not in libc).
const ENOTSUPP: i32 = 524;

/// The `FLOWS` map: lookups and removals for the tracker, and threshold commands.
pub struct FlowMap {
    pub(super) map: HashMap<MapData, FlowKey, Conn>,
    /// The same map's descriptor, for BPF_MAP_LOOKUP_AND_DELETE_ELEM (which aya's `HashMap`
    /// does not offer).
    pub(super) fd: OwnedFd,
    pub(super) control: ControlProgram,
    pub(super) contents: KernelContents,
}

/// Content extraction's maps: the `CONTENTS` records, the `CONTENTS_CONNS` counters and the
/// caps in `CONFIG`.
pub(super) struct KernelContents {
    pub(super) records: RingBuf<MapData>,
    pub(super) counters: HashMap<MapData, FlowKey, ContentCounters>,
    pub(super) config: Array<MapData, u64>,
    /// Some connection had extraction turned on (replays then pass whole frames).
    pub(super) active: bool,
}

impl FlowMap {
    /// A threshold or extraction command through `conntrack_control`.
    pub(super) fn command(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        let r = self.control.run(cmd);
        if r.is_ok() && cmd.mask & contents::CMD_SET_CONTENTS != 0 {
            self.contents.active |= cmd.mask & contents::EXTRACT_BITS != 0;
        }
        r
    }

    pub(super) fn drain_contents(&mut self, out: &mut Vec<ContentChunk>) {
        let hdr_len = size_of::<ContentHeader>();
        while let Some(item) = self.contents.records.next() {
            if item.len() < hdr_len {
                continue;
            }
            // SAFETY: the program writes whole `ContentHeader`s (repr(C), integers only).
            let hdr = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ContentHeader>()) };
            let end = (hdr_len + hdr.len as usize).min(item.len());
            out.push(ContentChunk {
                hdr,
                data: item[hdr_len..end].to_vec(),
            });
        }
    }

    pub(super) fn set_content_caps(
        &mut self,
        per_conn: u64,
        rate: u64,
    ) -> Result<(), DatapathError> {
        let err = |e: aya::maps::MapError| DatapathError::Other(format!("CONFIG: {e}"));
        self.contents
            .config
            .set(CONFIG_CONTENTS_CAP, per_conn, 0)
            .map_err(err)?;
        self.contents
            .config
            .set(CONFIG_CONTENTS_RATE, rate, 0)
            .map_err(err)
    }

    /// Sets or clears the program's `CONFIG_L2` flag (NewConn events with the first packet's
    /// link-layer fields).
    pub(super) fn set_l2_events(&mut self, on: bool) -> Result<(), DatapathError> {
        let err = |e: aya::maps::MapError| DatapathError::Other(format!("CONFIG: {e}"));
        let config = &mut self.contents.config;
        let flags = config.get(&CONFIG_FLAGS, 0).map_err(err)?;
        let flags = if on {
            flags | CONFIG_L2
        } else {
            flags & !CONFIG_L2
        };
        config.set(CONFIG_FLAGS, flags, 0).map_err(err)
    }

    /// Sets the program's tunnel depth (`CONFIG_TUNNEL_SHIFT` bits of the flags word).
    pub(super) fn set_tunnel_depth(&mut self, depth: u32) -> Result<bool, DatapathError> {
        if depth > MAX_TUNNEL_DEPTH {
            return Err(DatapathError::Other(format!(
                "--tunnel-max-depth {depth}: the kernel engine opens at most {MAX_TUNNEL_DEPTH} \
                 tunnel layers"
            )));
        }
        let err = |e: aya::maps::MapError| DatapathError::Other(format!("CONFIG: {e}"));
        let config = &mut self.contents.config;
        let flags = config.get(&CONFIG_FLAGS, 0).map_err(err)?;
        let flags = (flags & !(CONFIG_TUNNEL_MASK << CONFIG_TUNNEL_SHIFT))
            | ((depth as u64) << CONFIG_TUNNEL_SHIFT);
        config.set(CONFIG_FLAGS, flags, 0).map_err(err)?;
        Ok(true)
    }
}

impl FlowMap {
    pub fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        self.map.get(key, 0).ok()
    }

    /// The connection's last state, removed from the map in one step (one system call, and
    /// no packet can update it between the read and the removal).
    pub fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        let mut conn = std::mem::MaybeUninit::<Conn>::uninit();
        let mut attr = self.elem_attr(Some(key), conn.as_mut_ptr() as u64);
        // SAFETY: an element-command block for FLOWS, whose key and value sizes are those of
        // `FlowKey` and `Conn` (the loader checked the layout); `value` points to room for one
        // `Conn`, which the kernel fills on success.
        let r = unsafe { bpf_syscall(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) };
        let err = match r {
            // SAFETY: on success the kernel wrote a whole `Conn` (plain integers: any bytes
            // are a valid value).
            Ok(()) => return Some(unsafe { conn.assume_init() }),
            Err(e) => e,
        };
        match err.raw_os_error() {
            // Kernels before 5.14 cannot do it for hash maps: read, then remove (a packet in
            // between is lost to this record).
            Some(libc::EINVAL) | Some(ENOTSUPP) => {
                let conn = self.map.get(key, 0).ok()?;
                self.map.remove(key).ok()?;
                Some(conn)
            }
            _ => None,
        }
    }

    pub fn keys(&self) -> Vec<FlowKey> {
        self.map.keys().filter_map(Result::ok).collect()
    }

    /// The shutdown drain's batches (see `Datapath::drain_batches`): a thread with its own
    /// descriptor of FLOWS, at most two batches ahead of the agent.
    pub fn drain_batches(&mut self) -> Option<std::sync::mpsc::Receiver<Vec<(FlowKey, Conn)>>> {
        let fd = self.fd.try_clone().ok()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        std::thread::Builder::new()
            .name("drain".into())
            .spawn(move || {
                let mut cursor = None;
                loop {
                    let mut batch = Vec::with_capacity(DRAIN_BATCH);
                    let Some(more) = remove_batch(&fd, &mut cursor, &mut batch) else {
                        return;
                    };
                    if tx.send(batch).is_err() || !more {
                        return;
                    }
                }
            })
            .ok()?;
        Some(rx)
    }

    /// The key after `after` in the map's order (the first with `None`); None at the end.
    fn next_key(&self, after: Option<&FlowKey>) -> Option<FlowKey> {
        let mut next = std::mem::MaybeUninit::<FlowKey>::uninit();
        // `next_key` shares the union slot of `value`.
        let mut attr = self.elem_attr(after, next.as_mut_ptr() as u64);
        // SAFETY: an element-command block for FLOWS: `key` is null or points to a `FlowKey`,
        // `value` to room for one, which the kernel fills on success.
        let r = unsafe { bpf_syscall(BPF_MAP_GET_NEXT_KEY, &mut attr) };
        // SAFETY: on success the kernel wrote a whole key (plain integers).
        r.ok().map(|()| unsafe { next.assume_init() })
    }

    /// The element-command block for FLOWS with `key` (null for none) and `value`.
    fn elem_attr(&self, key: Option<&FlowKey>, value: u64) -> ElemAttr {
        ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: key.map_or(0, |k| (k as *const FlowKey) as u64),
            value,
            flags: 0,
        }
    }
}

/// Live mode: the program updates connections itself; the agent only reads and removes them.
impl Datapath for FlowMap {
    fn process(
        &mut self,
        _: &[u8],
        _: u64,
        _: bool,
        _: &mut Vec<Event>,
    ) -> Result<(), DatapathError> {
        Err(DatapathError::Other(
            "live datapath: packets are processed in the kernel".into(),
        ))
    }
    fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        FlowMap::lookup(self, key)
    }
    fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        FlowMap::remove(self, key)
    }
    fn keys(&self) -> Vec<FlowKey> {
        FlowMap::keys(self)
    }
    fn drain_batches(&mut self) -> Option<std::sync::mpsc::Receiver<Vec<(FlowKey, Conn)>>> {
        FlowMap::drain_batches(self)
    }
    fn keys_after(&self, after: Option<&FlowKey>, max: usize) -> Vec<FlowKey> {
        let mut out = Vec::with_capacity(max.min(4096));
        let mut cur = after.copied();
        while out.len() < max {
            let Some(k) = self.next_key(cur.as_ref()) else {
                break;
            };
            out.push(k);
            cur = Some(k);
        }
        out
    }
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        self.command(cmd)
    }
    fn drain_contents(&mut self, out: &mut Vec<ContentChunk>) {
        FlowMap::drain_contents(self, out)
    }
    fn content_counters(&self, key: &FlowKey) -> Option<ContentCounters> {
        self.contents.counters.get(key, 0).ok()
    }
    fn forget_contents(&mut self, key: &FlowKey) {
        // Only extraction keeps counters (service samples do not): no system call per
        // removed connection until some connection was extracted.
        if self.contents.active {
            let _ = self.contents.counters.remove(key);
        }
    }
    fn set_content_caps(&mut self, per_conn: u64, rate: u64) -> Result<(), DatapathError> {
        FlowMap::set_content_caps(self, per_conn, rate)
    }
    fn set_l2_events(&mut self, on: bool) -> Result<(), DatapathError> {
        FlowMap::set_l2_events(self, on)
    }
    fn set_tunnel_depth(&mut self, depth: u32) -> Result<bool, DatapathError> {
        FlowMap::set_tunnel_depth(self, depth)
    }
}

/// Up to `DRAIN_BATCH` connections read and removed in one BPF_MAP_LOOKUP_AND_DELETE_BATCH on
/// FLOWS (`fd`), a bucket at a time (each bucket under its lock, so no packet slips between
/// the read and the removal). `cursor` is the kernel's bucket position. Some(false) at the
/// end of the table; None when the kernel has no such command (before 5.6), or it failed
/// before returning anything.
fn remove_batch(
    fd: &OwnedFd,
    cursor: &mut Option<u32>,
    out: &mut Vec<(FlowKey, Conn)>,
) -> Option<bool> {
    let mut keys = Vec::<FlowKey>::with_capacity(DRAIN_BATCH);
    let mut values = Vec::<Conn>::with_capacity(DRAIN_BATCH);
    let mut next = 0u32;
    let mut attr = BatchAttr {
        in_batch: cursor.as_ref().map_or(0, |c| (c as *const u32) as u64),
        out_batch: (&mut next as *mut u32) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: DRAIN_BATCH as u32,
        map_fd: fd.as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: a batch-command block for FLOWS (a hash map: its batch position is a u32
    // bucket index); `keys` and `values` have room for `count` elements of the map's key
    // and value sizes (the loader checked the layout), which the kernel fills.
    let r = unsafe { bpf_syscall(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr) };
    let more = match r {
        Ok(()) => true,
        // The end of the table (the last elements may come with it).
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
        Err(_) if cursor.is_none() && attr.count == 0 => return None,
        Err(_) => false,
    };
    let n = (attr.count as usize).min(DRAIN_BATCH);
    // SAFETY: the kernel wrote `count` whole keys and values (plain integers: any bytes
    // are valid).
    unsafe {
        keys.set_len(n);
        values.set_len(n);
    }
    // An entry a packet inserted but has not built yet (another CPU holds its lock) is no
    // connection to log: it would be one of protocol 0 at time 0.
    out.extend(keys.into_iter().zip(values).filter(|(_, c)| c.is_built()));
    *cursor = Some(next);
    Some(more)
}
