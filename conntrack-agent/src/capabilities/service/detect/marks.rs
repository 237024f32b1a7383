//! UDP detection one datagram at a time. Every UDP rule reads its datagrams one by one (a
//! QUIC Initial among the client's first datagrams, a DNS message among either side's, an
//! RDPEUDP SYN as the client's first, ...), so what a datagram can confirm is known when it
//! arrives: its [`Marks`]. A connection then needs a few bits per side, not its bytes, until
//! it is logged; [`udp_names`] decides from them by [`super::detect`]'s order. Except where a
//! rule reads only a side's first datagram ([`position_matters`]), a datagram that marks
//! nothing leaves the answer as it is.

use super::{MAX_SAMPLE_DATAGRAMS, dns, ldap, quic, syslog, udp};

/// What one datagram can confirm: one bit per rule it satisfies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Marks(u16);

impl Marks {
    const QUIC: u16 = 1;
    const DNS: u16 = 1 << 1;
    const DHCP: u16 = 1 << 2;
    const NTP: u16 = 1 << 3;
    const RDPEUDP_SYN: u16 = 1 << 4;
    const RDPEUDP_SYN_ACK: u16 = 1 << 5;
    const SIP: u16 = 1 << 6;
    const SNMP: u16 = 1 << 7;
    const KRB: u16 = 1 << 8;
    const SYSLOG: u16 = 1 << 9;
    const LDAP: u16 = 1 << 10;

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
}

/// A rule over one datagram of a connection between the ports given.
type Rule = fn((u16, u16), &[u8]) -> bool;

/// The rules of the analyzers Zeek attaches by port, each with its mark.
const BY_PORT_RULES: [(u16, Rule); 10] = [
    (Marks::DNS, dns::udp_datagram),
    (Marks::DHCP, udp::dhcp),
    (Marks::NTP, udp::ntp),
    (Marks::RDPEUDP_SYN, udp::rdpeudp_syn),
    (Marks::RDPEUDP_SYN_ACK, udp::rdpeudp_syn_ack),
    (Marks::SIP, udp::sip),
    (Marks::SNMP, udp::snmp),
    (Marks::KRB, udp::krb),
    (Marks::SYSLOG, syslog::udp_first_datagram),
    (Marks::LDAP, ldap::udp_datagram),
];

/// The marks of datagram `d` of a UDP connection between `ports` (either order), sent by its
/// originator if `from_orig`. Off the ports of the analyzers Zeek attaches by port only a QUIC
/// Initial marks anything, and only the originator's: Zeek's QUIC analyzer opens the
/// originator's packets with the client's keys (the responder's would need the server's,
/// from the client's connection id), and it is the client's Initial that confirms.
pub fn marks(ports: (u16, u16), d: &[u8], from_orig: bool) -> Marks {
    let mut m = if from_orig && quic::confirms(d) {
        Marks::QUIC
    } else {
        0
    };
    if super::reject::udp_by_port(ports) {
        for (bit, rule) in BY_PORT_RULES {
            if rule(ports, d) {
                m |= bit;
            }
        }
    }
    Marks(m)
}

/// Whether a datagram's place among its side's datagrams counts on a connection between
/// `ports`: it does where a rule that reads only a side's first datagram is attached
/// (syslog's on 514, RDPEUDP's on 3389). Elsewhere a datagram that marks nothing changes no
/// answer, and need not even be counted.
pub fn position_matters(ports: (u16, u16)) -> bool {
    [514, 3389].iter().any(|&p| super::on_port(ports, p))
}

/// One side's first datagrams, as marks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SideMarks {
    /// Datagrams seen (saturating).
    count: u8,
    /// The first datagram's.
    first: Marks,
    /// Any of the first [`MAX_SAMPLE_DATAGRAMS`]'s.
    any: Marks,
}

impl SideMarks {
    /// The side's next datagram (beyond the first [`MAX_SAMPLE_DATAGRAMS`] only counted, as
    /// the detectors see no more).
    pub fn push(&mut self, m: Marks) {
        if self.count == 0 {
            self.first = m;
        }
        if usize::from(self.count) < MAX_SAMPLE_DATAGRAMS {
            self.any.0 |= m.0;
        }
        self.count = self.count.saturating_add(1);
    }

    /// Datagrams seen.
    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// The side in [`SideMarks::PACKED_BITS`] bits: what [`udp_names`] and
    /// [`SideMarks::push`] read of it (the count up to 7, the first datagram's marks of the
    /// rules that read only it, the others' of any datagram), for a connection's record.
    pub fn pack(&self) -> u32 {
        let any = u32::from(self.any.0);
        let first = u32::from(self.first.0);
        // QUIC, DNS, DHCP, NTP stay at bits 0-3; SIP, SNMP, KRB (6-8) go to 4-6, LDAP (10) to 7.
        let any = (any & 0xf) | ((any >> 2) & 0x70) | ((any >> 3) & 0x80);
        // RDPEUDP's SYN and SYN-ACK (4, 5) go to 0-1, syslog (9) to 2.
        let first = ((first >> 4) & 3) | ((first >> 7) & 4);
        u32::from(self.count.min(7)) | (first << 3) | (any << 6)
    }

    /// Bits of [`SideMarks::pack`]'s value.
    pub const PACKED_BITS: u32 = 14;

    /// The side [`SideMarks::pack`] packed.
    pub fn unpack(bits: u32) -> Self {
        let (count, first, any) = (bits & 7, (bits >> 3) & 7, (bits >> 6) & 0xff);
        let any = (any & 0xf) | ((any & 0x70) << 2) | ((any & 0x80) << 3);
        let first = ((first & 3) << 4) | ((first & 4) << 7);
        Self {
            count: count as u8,
            first: Marks(first as u16),
            any: Marks(any as u16),
        }
    }

    /// The marks of each of `datagrams`, in order, sent by the originator if `from_orig`.
    pub fn of(ports: (u16, u16), datagrams: &[&[u8]], from_orig: bool) -> Self {
        let mut s = Self::default();
        for d in datagrams {
            s.push(marks(ports, d, from_orig));
        }
        s
    }
}

/// Whether, with these sides (either the originator), only a QUIC Initial can change
/// [`udp_names`]' answer, whatever other datagrams either side sends: a datagram was marked
/// DNS, the first rule after QUIC's, which holds whichever side sent it (the rules that read
/// a side's first datagram come after it). The datapath then hands over only datagrams that
/// may be a QUIC Initial (`contents::SAMPLE_QUIC_ONLY`): of a DNS exchange (often a query
/// for A and one for AAAA on one socket, then their answers) only the first datagram is read.
pub fn only_quic_can_change(a: &SideMarks, b: &SideMarks) -> bool {
    (a.any.0 | b.any.0) & Marks::DNS != 0
}

/// Zeek's service names for a UDP connection whose originator's datagrams are `orig`, its
/// responder's `resp`: the first rule that holds, in [`super::detect`]'s order.
pub fn udp_names(orig: &SideMarks, resp: &SideMarks) -> &'static [&'static str] {
    if orig.count == 0 && resp.count == 0 {
        return &[];
    }
    let any = Marks(orig.any.0 | resp.any.0);
    // The rules that read any datagram of either side, after QUIC (the client's only).
    let either: [(u16, &'static [&'static str]); 3] = [
        (Marks::DNS, &["dns"]),
        (Marks::DHCP, &["dhcp"]),
        (Marks::NTP, &["ntp"]),
    ];
    let later: [(u16, &'static [&'static str]); 3] = [
        (Marks::SIP, &["sip"]),
        (Marks::SNMP, &["snmp"]),
        (Marks::KRB, &["krb"]),
    ];
    if orig.any.has(Marks::QUIC) {
        return &["quic", "ssl"];
    }
    if let Some((_, names)) = either.iter().find(|(bit, _)| any.has(*bit)) {
        return names;
    }
    if orig.first.has(Marks::RDPEUDP_SYN) && resp.first.has(Marks::RDPEUDP_SYN_ACK) {
        return &["rdpeudp"];
    }
    if let Some((_, names)) = later.iter().find(|(bit, _)| any.has(*bit)) {
        return names;
    }
    if orig.first.has(Marks::SYSLOG) {
        return &["syslog"];
    }
    if any.has(Marks::LDAP) {
        return &["ldap_udp"];
    }
    &[]
}

#[cfg(test)]
mod tests {
    use super::super::test_util::hex;
    use super::*;

    /// A DNS query for example.com (A, IN).
    fn query() -> Vec<u8> {
        hex("1234 0100 0001 0000 0000 0000 07 6578616d706c65 03 636f6d 00 0001 0001")
    }

    #[test]
    fn a_dns_message_marks_only_on_a_dns_port() {
        assert_eq!(marks((40000, 53), &query(), true), Marks(Marks::DNS));
        assert!(marks((40000, 5300), &query(), true).is_empty());
        assert!(marks((40000, 53), b"\0\0\0\0", true).is_empty());
    }

    #[test]
    fn any_datagram_of_either_side_counts_for_dns() {
        let q = query();
        let orig = SideMarks::of((40000, 53), &[b"junk", &q], true);
        let resp = SideMarks::of((40000, 53), &[b"junk"], true);
        assert_eq!(udp_names(&orig, &resp), ["dns"]);
        assert_eq!(udp_names(&resp, &orig), ["dns"]);
        // Beyond the first datagrams the detectors see, it no longer does.
        let late = SideMarks::of((40000, 53), &[b"a", b"b", b"c", b"d", &q], true);
        assert_eq!(late.count(), 5);
        assert!(udp_names(&late, &SideMarks::default()).is_empty());
    }

    #[test]
    fn syslog_needs_the_originators_first_datagram() {
        let msg: &[u8] = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed";
        let first = SideMarks::of((40000, 514), &[msg, b"x"], true);
        let second = SideMarks::of((40000, 514), &[b"x", msg], true);
        assert_eq!(udp_names(&first, &SideMarks::default()), ["syslog"]);
        assert!(udp_names(&second, &SideMarks::default()).is_empty());
        // The responder's is not the sender's.
        assert!(udp_names(&SideMarks::default(), &first).is_empty());
    }

    /// A QUIC version 1 Initial (curl's first, its first 100 bytes).
    fn quic_initial() -> Vec<u8> {
        super::super::test_util::hex(super::super::test_util::QUIC_INITIAL)
    }

    #[test]
    fn off_the_analyzer_ports_only_a_quic_initial_marks() {
        let ntp = [0x23u8; 48];
        assert!(marks((40000, 51820), &[0; 64], true).is_empty());
        assert!(marks((40000, 1230), &ntp, true).is_empty());
        assert_eq!(marks((123, 123), &ntp, true), Marks(Marks::NTP));
        assert_eq!(
            marks((40000, 443), &quic_initial(), true),
            Marks(Marks::QUIC)
        );
        // QUIC is the client's: an Initial from the responder confirms nothing, as a side
        // or when it is read (the client's keys do not open a server's packets).
        let initial = SideMarks::of((40000, 443), &[&quic_initial()], true);
        assert_eq!(udp_names(&initial, &SideMarks::default()), ["quic", "ssl"]);
        assert!(udp_names(&SideMarks::default(), &initial).is_empty());
        assert!(marks((40000, 443), &quic_initial(), false).is_empty());
    }

    #[test]
    fn only_where_a_first_datagram_rule_is_attached_does_position_matter() {
        assert!(position_matters((40000, 514)));
        assert!(position_matters((3389, 61291)));
        for p in [53, 123, 5353, 161, 389, 443, 51820] {
            assert!(!position_matters((40000, p)), "{p}");
        }
        // Elsewhere an unmarked datagram may be left out: the names stay the same.
        let q = query();
        let with = SideMarks::of((40000, 53), &[b"junk", &q], true);
        let without = SideMarks::of((40000, 53), &[&q], true);
        assert_eq!(
            udp_names(&with, &SideMarks::default()),
            udp_names(&without, &SideMarks::default())
        );
    }

    proptest::proptest! {
        /// The datapath hands over no UDP datagram `contents::udp_sample_useful` turns down:
        /// such a datagram marks nothing here, so leaving it out changes no answer (it still
        /// counts against its side's budget, where position matters: only on analyzer ports,
        /// where every datagram is handed over).
        #[test]
        fn a_datagram_the_datapath_keeps_back_marks_nothing(
            pa: u16,
            pb in proptest::prop_oneof![proptest::strategy::Just(443u16), proptest::prelude::any::<u16>()],
            mut d in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..120),
            quic_like: bool,
        ) {
            if quic_like {
                // Mostly a valid Initial but for its first byte.
                let q = quic_initial();
                d = q[..q.len().min(d.len().max(20))].to_vec();
                d[0] &= 0x3f;
            }
            if !conntrack_common::contents::udp_sample_useful(pa, pb, d[0]) {
                proptest::prop_assert!(marks((pa, pb), &d, true).is_empty());
                proptest::prop_assert!(!position_matters((pa, pb)));
            }
        }
    }

    /// Marks from a number: any combination of the rules' bits.
    fn marks_of(bits: u16) -> Marks {
        Marks(bits & 0x7ff)
    }

    proptest::proptest! {
        /// A side packed for a connection's record gives the same names, in either role and
        /// whatever the other side, and takes the next datagrams as the side itself does.
        #[test]
        fn a_packed_side_answers_as_the_side(
            a in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..7),
            b in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..7),
            later in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..4),
        ) {
            let side = |ms: &[u16]| {
                let mut s = SideMarks::default();
                for &m in ms {
                    s.push(marks_of(m));
                }
                s
            };
            let (mut x, y) = (side(&a), side(&b));
            let mut px = SideMarks::unpack(x.pack());
            let py = SideMarks::unpack(y.pack());
            proptest::prop_assert!(x.pack() < 1 << SideMarks::PACKED_BITS);
            proptest::prop_assert_eq!(udp_names(&px, &py), udp_names(&x, &y));
            proptest::prop_assert_eq!(udp_names(&py, &px), udp_names(&y, &x));
            proptest::prop_assert_eq!(px.count() > 0, x.count() > 0);
            for &m in &later {
                x.push(marks_of(m));
                px = SideMarks::unpack(px.pack());
                px.push(marks_of(m));
                proptest::prop_assert_eq!(udp_names(&px, &py), udp_names(&x, &y));
                proptest::prop_assert_eq!(udp_names(&py, &px), udp_names(&y, &x));
                proptest::prop_assert_eq!(px.count().min(7), x.count().min(7));
            }
        }
    }

    proptest::proptest! {
        /// Once [`only_quic_can_change`] holds, a datagram that marks no QUIC Initial, from
        /// either side, leaves the names as they are, in either role: the datapath may keep
        /// such datagrams back from then on.
        #[test]
        fn once_only_quic_can_change_no_other_datagram_does(
            a in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..5),
            b in proptest::collection::vec(proptest::prelude::any::<u16>(), 0..5),
            later in proptest::collection::vec((proptest::prelude::any::<u16>(), proptest::prelude::any::<bool>()), 1..6),
        ) {
            let side = |ms: &[u16]| {
                let mut s = SideMarks::default();
                for &m in ms {
                    s.push(marks_of(m));
                }
                s
            };
            let (mut x, mut y) = (side(&a), side(&b));
            proptest::prop_assume!(only_quic_can_change(&x, &y));
            let names = (udp_names(&x, &y), udp_names(&y, &x));
            for &(m, to_x) in &later {
                let m = Marks(marks_of(m).0 & !Marks::QUIC);
                if to_x { x.push(m) } else { y.push(m) }
                proptest::prop_assert!(only_quic_can_change(&x, &y));
                proptest::prop_assert_eq!((udp_names(&x, &y), udp_names(&y, &x)), names);
            }
        }
    }

    #[test]
    fn a_dns_message_leaves_only_quic_to_change_the_names() {
        let q = query();
        let (orig, resp) = (
            SideMarks::of((40000, 53), &[&q], true),
            SideMarks::of((40000, 53), &[b"junk"], true),
        );
        assert!(only_quic_can_change(&orig, &resp));
        assert!(only_quic_can_change(&resp, &orig));
        assert!(
            only_quic_can_change(&orig, &SideMarks::default()),
            "the query alone"
        );
        // No DNS: other datagrams can still change the answer.
        assert!(!only_quic_can_change(&resp, &SideMarks::default()));
        let ntp = SideMarks::of((123, 123), &[&[0x23u8; 48]], true);
        assert_eq!(udp_names(&ntp, &resp), ["ntp"]);
        assert!(
            !only_quic_can_change(&ntp, &resp),
            "a DNS datagram would make it dns"
        );
    }

    #[test]
    fn nothing_seen_is_nothing() {
        assert!(udp_names(&SideMarks::default(), &SideMarks::default()).is_empty());
    }
}
