//! XMPP (RFC 6120): both sides open an XML stream (`<stream:stream`, often after an XML
//! declaration); the client's `<starttls/>` and the server's `<proceed/>` switch to TLS.

use super::bytes::find;
use super::tls;

pub fn detect(orig: &[u8], resp: &[u8], found: &mut Vec<&'static str>) -> bool {
    if !opens_stream(orig) || !opens_stream(resp) {
        return false;
    }
    found.push("xmpp");
    if let Some(i) = find(orig, b"<starttls")
        && tls::client_hello_after(orig, i)
    {
        found.push("ssl");
    }
    true
}

/// The stream starts with `<stream:stream`, possibly after `<?xml ...?>`.
fn opens_stream(b: &[u8]) -> bool {
    let b = super::text::trim_start(b);
    let b = if b.starts_with(b"<?xml") {
        match find(b, b"?>") {
            Some(end) => super::text::trim_start(&b[end + 2..]),
            None => return false,
        }
    } else {
        b
    };
    b.starts_with(b"<stream:stream")
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::tcp;

    #[test]
    fn both_streams_are_xmpp() {
        let client = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>".as_slice();
        let server =
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream".as_slice();
        assert_eq!(detect(&tcp((56048, 5222), &[client], &[server])), ["xmpp"]);
        let mut tls = client.to_vec();
        tls.extend_from_slice(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
        assert_eq!(
            detect(&tcp((56048, 5222), &[&tls], &[server])),
            ["xmpp", "ssl"]
        );
        assert!(detect(&tcp((56048, 5222), &[client], &[b"HTTP/1.1 200 OK\r\n"])).is_empty());
    }
}
