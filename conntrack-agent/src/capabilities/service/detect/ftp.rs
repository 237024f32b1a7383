//! FTP (RFC 959, RFC 2428): the control channel's announcements of data connections.

use std::net::IpAddr;

/// A data connection that an FTP control channel announced: the address and port that the
/// data connection's responder will use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FtpExpect {
    /// The announced address; `None` for EPSV, which names only a port (the server's address).
    pub addr: Option<IpAddr>,
    pub port: u16,
    /// Announced by the server (PASV, EPSV: the client connects to the server), not the
    /// client (PORT, EPRT: the server connects to the client).
    pub from_server: bool,
}

/// FTP control-channel announcements of a data connection (PORT, PASV 227, EPRT, EPSV 229)
/// found in these bytes.
pub fn ftp_announcements(_client: &[u8], _server: &[u8]) -> Vec<FtpExpect> {
    Vec::new()
}
