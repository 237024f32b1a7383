//! The few pieces of ASN.1 BER (X.690) that LDAP, SNMP and Kerberos detection need.

/// A BER element header at `at`: its tag byte, content length and where the content starts.
/// Only single-byte tags, and definite lengths of up to 4 bytes.
pub fn header(b: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let tag = *b.get(at)?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let first = *b.get(at + 1)?;
    if first < 0x80 {
        return Some((tag, first as usize, at + 2));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let len = b
        .get(at + 2..at + 2 + n)?
        .iter()
        .fold(0usize, |l, &x| (l << 8) | x as usize);
    Some((tag, len, at + 2 + n))
}

/// A small INTEGER element at `at` (up to 4 bytes): its value and where the next element
/// starts.
pub fn integer(b: &[u8], at: usize) -> Option<(u32, usize)> {
    let (tag, len, start) = header(b, at)?;
    if tag != 0x02 || len == 0 || len > 4 {
        return None;
    }
    let v = b
        .get(start..start + len)?
        .iter()
        .fold(0u32, |v, &x| (v << 8) | u32::from(x));
    Some((v, start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        assert_eq!(header(b"\x30\x0c\x02\x01\x01", 0), Some((0x30, 12, 2)));
        assert_eq!(
            header(b"\x30\x84\x00\x00\x00\x4b\x02", 0),
            Some((0x30, 0x4b, 6))
        );
        assert_eq!(header(b"\x30\x80", 0), None);
        assert_eq!(integer(b"\x02\x02\x00\x97", 0), Some((0x97, 4)));
    }
}
