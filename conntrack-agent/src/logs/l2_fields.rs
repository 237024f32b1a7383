//! The columns of Zeek's MAC and VLAN conn policy scripts: `orig_l2_addr`/`resp_l2_addr`
//! (`policy/protocols/conn/mac-logging`, `--mac-logging`) and `vlan`/`inner_vlan`
//! (`policy/protocols/conn/vlan-logging`, `--vlan-logging`), after `community_id`
//! (the scripts' load order in Zeek's own policy list), in TSV and JSON.

use conntrack_common::packet::l2::L2Info;
use serde_json::Value;

/// `#fields`/`#types` of `--mac-logging`.
pub const MAC_FIELDS: [(&str, &str); 2] = [("orig_l2_addr", "string"), ("resp_l2_addr", "string")];
/// `#fields`/`#types` of `--vlan-logging`.
pub const VLAN_FIELDS: [(&str, &str); 2] = [("vlan", "int"), ("inner_vlan", "int")];

/// The optional conn.log columns a writer adds after Zeek's standard ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns {
    /// `community_id` (`--community-id`).
    pub community_id: bool,
    /// `orig_l2_addr`, `resp_l2_addr` (`--mac-logging`).
    pub mac: bool,
    /// `vlan`, `inner_vlan` (`--vlan-logging`).
    pub vlan: bool,
}

impl From<bool> for Columns {
    /// Only `community_id` (the logs that take no link-layer columns).
    fn from(community_id: bool) -> Self {
        Columns {
            community_id,
            ..Columns::default()
        }
    }
}

impl Columns {
    /// True if a column of the MAC or VLAN policy is on (the connection's first packet's link
    /// layer is then kept until it is logged).
    pub fn l2(&self) -> bool {
        self.mac || self.vlan
    }

    /// The extra `(field, type)` pairs, in column order.
    pub fn fields(&self) -> Vec<(&'static str, &'static str)> {
        let mut f = Vec::new();
        if self.community_id {
            f.push(crate::logs::conn_log::COMMUNITY_ID_FIELD);
        }
        if self.mac {
            f.extend(MAC_FIELDS);
        }
        if self.vlan {
            f.extend(VLAN_FIELDS);
        }
        f
    }
}

/// One connection's values of those columns (`None`: unset, `-` in TSV, left out of JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L2Fields {
    pub orig_l2_addr: Option<[u8; 6]>,
    pub resp_l2_addr: Option<[u8; 6]>,
    pub vlan: Option<u16>,
    pub inner_vlan: Option<u16>,
}

impl L2Fields {
    /// The values Zeek logs for a connection whose first packet carried `l2` and came from the
    /// connection's originator as it is now (`first_from_orig`): the addresses follow the
    /// endpoints through role flips, the VLAN ids stay; an all-zero address and id 0 are unset.
    pub fn of_first_packet(l2: &L2Info, first_from_orig: bool) -> Self {
        let (orig, resp) = if first_from_orig {
            (l2.src, l2.dst)
        } else {
            (l2.dst, l2.src)
        };
        let mac = |m: [u8; 6]| (m != [0; 6]).then_some(m);
        L2Fields {
            orig_l2_addr: mac(orig),
            resp_l2_addr: mac(resp),
            vlan: (l2.vlan != 0).then_some(l2.vlan),
            inner_vlan: (l2.inner_vlan != 0).then_some(l2.inner_vlan),
        }
    }

    /// Appends the columns `cols` turns on (the MAC and VLAN ones), each after a tab.
    pub fn write_tsv(&self, cols: &Columns, out: &mut String) {
        if cols.mac {
            for m in [self.orig_l2_addr, self.resp_l2_addr] {
                out.push('\t');
                match m {
                    Some(m) => out.push_str(&fmt_mac(&m)),
                    None => out.push('-'),
                }
            }
        }
        if cols.vlan {
            for v in [self.vlan, self.inner_vlan] {
                out.push('\t');
                match v {
                    Some(v) => out.push_str(itoa::Buffer::new().format(v)),
                    None => out.push('-'),
                }
            }
        }
    }

    /// Appends the set ones of the columns `cols` turns on to a JSON record's fields.
    pub fn push_json(&self, cols: &Columns, m: &mut Vec<(&'static str, Value)>) {
        if cols.mac {
            let [(orig, _), (resp, _)] = MAC_FIELDS;
            for (name, v) in [(orig, self.orig_l2_addr), (resp, self.resp_l2_addr)] {
                if let Some(v) = v {
                    m.push((name, fmt_mac(&v).into()));
                }
            }
        }
        if cols.vlan {
            let [(vlan, _), (inner, _)] = VLAN_FIELDS;
            for (name, v) in [(vlan, self.vlan), (inner, self.inner_vlan)] {
                if let Some(v) = v {
                    m.push((name, v.into()));
                }
            }
        }
    }
}

/// A MAC address as Zeek's `fmt_mac` prints it: six lower-case hex pairs joined by colons.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(17);
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x00, 0x13, 0x7f, 0xbe, 0x8c, 0xff];
    const B: [u8; 6] = [0x00, 0xe0, 0xdb, 0x01, 0xcf, 0x4b];

    fn first() -> L2Info {
        L2Info {
            src: A,
            dst: B,
            vlan: 10,
            inner_vlan: 0,
        }
    }

    #[test]
    fn addresses_follow_the_roles_vlans_do_not() {
        let f = L2Fields::of_first_packet(&first(), true);
        assert_eq!((f.orig_l2_addr, f.resp_l2_addr), (Some(A), Some(B)));
        let flipped = L2Fields::of_first_packet(&first(), false);
        assert_eq!(
            (flipped.orig_l2_addr, flipped.resp_l2_addr),
            (Some(B), Some(A))
        );
        assert_eq!((f.vlan, f.inner_vlan), (Some(10), None));
        assert_eq!((flipped.vlan, flipped.inner_vlan), (Some(10), None));
    }

    #[test]
    fn zero_address_is_unset() {
        // A loopback capture's Ethernet header, or a link layer without addresses.
        let f = L2Fields::of_first_packet(&L2Info::default(), true);
        assert_eq!(f, L2Fields::default());
        let cols = Columns {
            mac: true,
            vlan: true,
            ..Columns::default()
        };
        let mut out = String::new();
        f.write_tsv(&cols, &mut out);
        assert_eq!(out, "\t-\t-\t-\t-");
        let mut m = Vec::new();
        f.push_json(&cols, &mut m);
        assert!(m.is_empty());
    }

    #[test]
    fn tsv_and_json_values() {
        let f = L2Fields::of_first_packet(&first(), true);
        let mut out = String::new();
        f.write_tsv(
            &Columns {
                mac: true,
                ..Columns::default()
            },
            &mut out,
        );
        assert_eq!(out, "\t00:13:7f:be:8c:ff\t00:e0:db:01:cf:4b");
        out.clear();
        f.write_tsv(
            &Columns {
                vlan: true,
                ..Columns::default()
            },
            &mut out,
        );
        assert_eq!(out, "\t10\t-");
        let mut m = Vec::new();
        let all = Columns {
            community_id: true,
            mac: true,
            vlan: true,
        };
        f.push_json(&all, &mut m);
        let names: Vec<&str> = m.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["orig_l2_addr", "resp_l2_addr", "vlan"]);
        assert_eq!(m[2].1, Value::from(10));
        let fields: Vec<&str> = all.fields().iter().map(|(k, _)| *k).collect();
        assert_eq!(
            fields,
            [
                "community_id",
                "orig_l2_addr",
                "resp_l2_addr",
                "vlan",
                "inner_vlan"
            ]
        );
    }
}
