//! Links parse -> key -> process_packet into one BPF object, and the fast path as the eBPF
//! glue calls it (prefilter, key, `fast_update` on the map value). The panic handler calls an
//! undefined symbol, so `check.sh` fails if any panic path survives optimisation; it also
//! reports the largest stack offset used.
#![no_std]
#![no_main]

use conntrack_common::conn::Conn;
use conntrack_common::contents;
use conntrack_common::engine::{EngineConfig, FastMeta, FlowTable, fast_update, process_packet};
use conntrack_common::event::ConnChange;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{MAX_HEADER_BYTES, PacketMeta, parse_ethernet, parse_l4};

struct Cfg;
impl EngineConfig for Cfg {
    fn likely_server_port(&self, port: u16, _proto: u8) -> bool {
        port == 80
    }
}

struct Table(*mut Conn);
impl FlowTable for Table {
    fn get_mut(&mut self, _key: &FlowKey) -> Option<&mut Conn> {
        unsafe { self.0.as_mut() }
    }
    fn insert(&mut self, _key: &FlowKey, conn: &Conn) -> bool {
        unsafe { core::ptr::write_volatile(self.0, *conn) };
        true
    }
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub extern "C" fn prog(buf: *const u8, conn: *mut Conn, meta: *mut PacketMeta, out: *mut ConnChange, len: u32) -> i32 {
    let frame = unsafe { core::slice::from_raw_parts(buf, (len as usize) & (MAX_HEADER_BYTES - 1)) };
    let meta = unsafe { &mut *meta };
    if parse_ethernet(frame, meta).is_err() {
        return 0;
    }
    // On BPF `parse_ip` stops at the transport header; the eBPF glue calls `parse_l4` itself.
    let l4_off = meta.l4_offset as usize & (MAX_HEADER_BYTES - 1);
    let l4_len = meta.ip_len.wrapping_sub(meta.l4_offset as u32);
    if let Some(l4) = frame.get(14 + l4_off..)
        && parse_l4(l4, l4_len, meta).is_err()
    {
        return 0;
    }
    let mut t = Table(conn);
    let ch = process_packet(&mut t, meta, 12345, true, &Cfg, |e| {
        if let Some(c) = e.conn {
            let side = conntrack_common::engine::is_orig(c, e.meta);
            unsafe { *out = ConnChange::of(e.kind, e.changes, e.ts_ns, e.key, c, side) };
        }
    });
    // Content extraction's decisions (the eBPF contents stage uses these).
    let c = unsafe { &*conn };
    let side = conntrack_common::engine::is_orig(c, meta);
    let mut window = [meta.seq as u64, meta.ack as u64];
    let n = if contents::wanted(c, meta, true, side) {
        let n = contents::admit(c.orig.pkts, meta.ack as u64, meta.payload_len);
        contents::rate_admit(&mut window, 12345, meta.window as u64, n)
            .wrapping_add(contents::record_seq(meta, n))
    } else {
        0
    };
    (ch.0 ^ n) as i32
}

/// The fast path over a map value: the packet-only prefilter, the key, then the decision and
/// update. Returns `engine::Fast` as u32, or 2 when the prefilter declined.
#[unsafe(no_mangle)]
#[unsafe(link_section = "classifier")]
pub extern "C" fn fast(
    conn: *mut Conn,
    m: *const FastMeta,
    key: *mut FlowKey,
    now_ns: u64,
) -> u32 {
    let m = unsafe { &*m };
    if !m.may_apply() {
        return 2;
    }
    unsafe { *key = FlowKey::from_fast(m) };
    fast_update(unsafe { &mut *conn }, m, now_ns) as u32
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    unsafe extern "C" {
        fn __reachable_panic() -> !;
    }
    unsafe { __reachable_panic() }
}
