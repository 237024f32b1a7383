//! LDAP (RFC 4511) over TCP and UDP, with the SASL mechanisms inside a bind that Zeek's LDAP
//! analyzer hands on: NTLM (`ntlm`), and Kerberos through GSSAPI (`krb`, `gssapi`).
//!
//! Zeek attaches it on port 389 (TCP as `ldap_tcp`, UDP as `ldap_udp`) and by signature on any
//! port; it confirms once a message parses, from either side, so a client whose requests
//! go unanswered still counts. A SASL mechanism inside the first message is confirmed while
//! that message is parsed, so before LDAP itself; STARTTLS (an extended request) then TLS
//! adds `ssl`.

use super::bytes::find;
use super::{ber, tls};

/// The OID of the StartTLS extended operation (RFC 4511 4.14.1).
const STARTTLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";
/// The Kerberos 5 mechanism OID (1.2.840.113554.1.2.2), DER-encoded.
const KRB5_OID: &[u8] = b"\x06\x09\x2a\x86\x48\x86\xf7\x12\x01\x02\x02";

/// Microsoft's variant of it (1.2.840.48018.1.2.2), which Windows clients offer first.
const MS_KRB5_OID: &[u8] = b"\x06\x09\x2a\x86\x48\x82\xf7\x12\x01\x02\x02";

/// An LDAPMessage at `at`: SEQUENCE { messageID INTEGER, protocolOp [APPLICATION n] }.
/// Returns the operation's tag and where the message ends.
fn message(b: &[u8], at: usize) -> Option<(u8, usize)> {
    let (tag, len, start) = ber::header(b, at)?;
    if tag != 0x30 || len < 5 {
        return None;
    }
    let (_, op_at) = ber::integer(b, start)?;
    let (op, _, _) = ber::header(b, op_at)?;
    // Application class: constructed operations 0x60..0x79, and the primitive unbind (0x42)
    // and abandon (0x50) requests.
    let known = matches!(op, 0x60..=0x79) || op == 0x42 || op == 0x50;
    known.then_some((op, start + len))
}

/// The stream starts with an LDAP message.
fn starts_message(b: &[u8]) -> bool {
    message(b, 0).is_some()
}

pub fn detect_tcp(orig: &[u8], resp: &[u8], found: &mut Vec<&'static str>) -> bool {
    let Some((op, first_end)) = message(orig, 0) else {
        return false;
    };
    if !(resp.is_empty() || starts_message(resp)) {
        return false;
    }
    // A bind request (0x60) carrying a SASL mechanism: its confirmation comes first.
    let first = &orig[..first_end.min(orig.len())];
    let inner_first = if op == 0x60 {
        sasl_mechanism(first)
    } else {
        None
    };
    found.extend_from_slice(inner_first.unwrap_or_default());
    found.push("ldap_tcp");
    if inner_first.is_none() {
        found.extend_from_slice(sasl_mechanism(orig).unwrap_or_default());
    }
    if let Some(i) = find(orig, STARTTLS_OID)
        && tls::client_hello_after(orig, i)
    {
        found.push("ssl");
    }
    true
}

/// The names of the SASL mechanism whose token `b` carries, which Zeek's LDAP analyzer hands
/// to an analyzer of its own: NTLM, or Kerberos through GSSAPI.
fn sasl_mechanism(b: &[u8]) -> Option<&'static [&'static str]> {
    if find(b, b"NTLMSSP\0").is_some() {
        Some(&["ntlm"])
    } else if find(b, KRB5_OID).is_some() || find(b, MS_KRB5_OID).is_some() {
        Some(&["krb", "gssapi"])
    } else {
        None
    }
}

/// Connectionless LDAP (RFC 1798's CLDAP, as Active Directory's DC locator uses it) on 389:
/// datagram `d`, from either side, starts an LDAP message.
pub fn udp_datagram(ports: (u16, u16), d: &[u8]) -> bool {
    super::on_port(ports, 389) && starts_message(d)
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::{hex, tcp, udp};

    /// A simple bind for cn=admin and its success, then an add request.
    const BIND: &[u8] =
        b"0*\x02\x01\x01`%\x02\x01\x03\x04\x1acn=admin,dc=example,dc=com\x80\x04zeek";
    const BOUND: &[u8] = b"0\x0c\x02\x01\x01a\x07\n\x01\x00\x04\x00\x04\x00";

    #[test]
    fn bind_and_result_are_ldap() {
        assert_eq!(detect(&tcp((46160, 389), &[BIND], &[BOUND])), ["ldap_tcp"]);
        assert_eq!(
            detect(&tcp((46160, 32681), &[BIND], &[BOUND])),
            ["ldap_tcp"]
        );
    }

    #[test]
    fn unanswered_requests_are_ldap() {
        let add = b"08\x02\x01\x01h3\x04\x19cn=test,dc=example,dc=com0\x160\x14\x04\x0bobjectClass1\x05\x04\x03top".as_slice();
        assert_eq!(detect(&tcp((50000, 389), &[add], &[])), ["ldap_tcp"]);
    }

    #[test]
    fn an_ntlm_bind_confirms_ntlm_first() {
        let bind = b"0\x84\x00\x00\x00K\x02\x02\x00\x97`\x84\x00\x00\x00A\x02\x01\x03\x04\x00\xa3\x84\x00\x00\x006\
            \x04\nGSS-SPNEGO\x04(NTLMSSP\x00\x01\x00\x00\x00\x97\x82\x08\xe2".as_slice();
        let reply = b"0\x84\x00\x00\x01\x15\x02\x02\x00\x97a\x84\x00\x00\x01\x0b\n\x01\x0e\x04\x00\x04\x00\x87\x82\x01\x00NTLMSSP\x00\x02".as_slice();
        assert_eq!(
            detect(&tcp((60387, 389), &[bind], &[reply])),
            ["ntlm", "ldap_tcp"]
        );
    }

    #[test]
    fn a_kerberos_bind_first_confirms_krb_and_gssapi_first() {
        // Zeek's `ldap.sasl-signed-clear`: a GSS-SPNEGO bind carrying a Kerberos AP-REQ is the
        // connection's first message (its first bytes as captured), and the bind's reply.
        let bind = hex(
            "30840000072a0201096084000007210201030400a38400000716040a4753532d53504e45474f\
             048207066082070206062b0601050502a08206f6308206f2a030302e06092a864882f7120102\
             0206092a864886f712010202",
        );
        let reply = hex(
            "3084000000cd0201096184000000c40a010004000400878200b9a181b63081b3a0030a0100a1\
             0b06092a864882f712010202",
        );
        assert_eq!(
            detect(&tcp((59356, 389), &[&bind], &[&reply])),
            ["krb", "gssapi", "ldap_tcp"]
        );
        // Its first message a search, the same bind after it: LDAP is confirmed first.
        let search = b"0\x0c\x02\x01\x01c\x07\x04\x00\x0a\x01\x00\x0a\x01\x00".as_slice();
        let later = [search, &bind].concat();
        assert_eq!(
            detect(&tcp((59355, 389), &[&later], &[&reply])),
            ["ldap_tcp", "krb", "gssapi"]
        );
    }

    #[test]
    fn other_ber_is_not_ldap() {
        // An SNMP-like SEQUENCE whose operation is a context tag.
        let snmp = b"0\x26\x02\x01\x01\x04\x06public\xa0\x19".as_slice();
        assert!(detect(&tcp((40000, 389), &[snmp], &[])).is_empty());
        assert_eq!(detect(&udp((40000, 389), &[BIND], &[])), ["ldap_udp"]);
        assert!(detect(&udp((40000, 3890), &[BIND], &[])).is_empty());
    }
}
