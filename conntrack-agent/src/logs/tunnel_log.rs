//! tunnel.log as Zeek's tunnels framework writes it: a line when a tunnel is first seen
//! (`Tunnel::DISCOVER`) and when a UDP tunnel's connection is removed (`Tunnel::CLOSE`), with
//! the tunnel's uid, so that `tunnel_parents` of an inner connection can be looked up (for GRE
//! and IP-in-IP, whose tunnels have no conn.log record).

use crate::logs::conn_log::LogFormat;
use crate::logs::health::LogHealth;
use crate::logs::record::{fmt_addr, fmt_time_ns};
use crate::logs::rotate::{HeaderFn, LogFile, LogOptions, SharedLog, Tick, fmt_log_date};
use crate::util::site::addr_from_bytes;
use conntrack_common::tunnel::TunnelType;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

const FIELDS: [&str; 8] = [
    "ts",
    "uid",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "tunnel_type",
    "action",
];
const TYPES: [&str; 8] = [
    "time", "string", "addr", "port", "addr", "port", "enum", "enum",
];

/// `Tunnel::Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Discover,
    Close,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Discover => "Tunnel::DISCOVER",
            Action::Close => "Tunnel::CLOSE",
        }
    }
}

/// One tunnel.log line's content.
#[derive(Debug, Clone)]
pub struct TunnelRecord<'a> {
    pub ts_ns: i64,
    pub uid: &'a str,
    pub orig: [u8; 16],
    pub orig_p: u16,
    pub resp: [u8; 16],
    pub resp_p: u16,
    pub tunnel: TunnelType,
    pub action: Action,
}

fn tsv_header(open_secs: i64) -> String {
    format!(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n\
         #path\ttunnel\n#open\t{}\n#fields\t{}\n#types\t{}\n",
        fmt_log_date(open_secs),
        FIELDS.join("\t"),
        TYPES.join("\t")
    )
}

/// The line of `r` (without the newline).
pub fn line(r: &TunnelRecord<'_>, format: LogFormat) -> String {
    let ts = fmt_time_ns(r.ts_ns);
    let orig = fmt_addr(&addr_from_bytes(&r.orig));
    let resp = fmt_addr(&addr_from_bytes(&r.resp));
    match format {
        LogFormat::Tsv => format!(
            "{ts}\t{}\t{orig}\t{}\t{resp}\t{}\t{}\t{}",
            r.uid,
            r.orig_p,
            r.resp_p,
            r.tunnel.log_name(),
            r.action.as_str()
        ),
        // Every string is from a fixed alphabet: nothing to escape.
        LogFormat::Json => format!(
            "{{\"ts\":{ts},\"uid\":\"{}\",\"id.orig_h\":\"{orig}\",\"id.orig_p\":{},\
             \"id.resp_h\":\"{resp}\",\"id.resp_p\":{},\"tunnel_type\":\"{}\",\"action\":\"{}\"}}",
            r.uid,
            r.orig_p,
            r.resp_p,
            r.tunnel.log_name(),
            r.action.as_str()
        ),
    }
}

/// `<log-dir>/tunnel.log`, shared with the agent, which rotates and flushes it with conn.log.
/// As Zeek's, the file is made by the first tunnel: a capture without tunnels leaves none.
/// With `--log-dir -` there is no directory for it: tunnels are still tracked (conn.log's
/// `tunnel_parents`), their lines are dropped with one warning.
pub struct TunnelLog {
    file: Rc<RefCell<Lazy>>,
    format: LogFormat,
}

/// The log file once a line was written; until then the agent's ticks do nothing.
struct Lazy {
    file: Option<LogFile>,
    /// None: conn.log goes to stdout with no log directory (`--log-dir -`).
    path: Option<std::path::PathBuf>,
    /// The one warning about dropped lines was given.
    warned: bool,
    opts: LogOptions,
    format: LogFormat,
    health: std::sync::Arc<LogHealth>,
}

impl Lazy {
    /// The file, made now if this is the first line; None when there is nowhere to write.
    fn file(&mut self) -> anyhow::Result<Option<&mut LogFile>> {
        let Some(path) = &self.path else {
            if !self.warned {
                self.warned = true;
                eprintln!("{NO_DIR_WARNING}");
            }
            return Ok(None);
        };
        if self.file.is_none() {
            let header: Option<HeaderFn> =
                (self.format == LogFormat::Tsv).then(|| Box::new(tsv_header) as HeaderFn);
            let f = LogFile::create(path, "tunnel", header, self.opts.clone(), false)?;
            self.file = Some(f);
        }
        Ok(self.file.as_mut())
    }
}

/// Said once, at the first tunnel of a run whose conn.log goes to stdout with `--log-dir -`.
const NO_DIR_WARNING: &str = "conntrack-agent: warning: tunnels seen, but tunnel.log is not \
    written with --log-dir - (conn.log's tunnel_parents still names them); \
    use --stdout --log-dir DIR to keep tunnel.log";

impl Tick for Lazy {
    fn tick(&mut self, now_ns: i64) -> anyhow::Result<()> {
        match &mut self.file {
            Some(f) => f.tick(now_ns),
            None => Ok(()),
        }
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
    fn health(&self) -> std::sync::Arc<LogHealth> {
        match &self.file {
            Some(f) => Tick::health(f),
            // Nothing written, nothing lost.
            None => self.health.clone(),
        }
    }
}

impl TunnelLog {
    /// tunnel.log in `dir`; `-` (conn.log to stdout, no log directory) writes none.
    pub fn create(dir: &Path, format: LogFormat, opts: LogOptions) -> anyhow::Result<Self> {
        let path = if dir.as_os_str() == "-" {
            None
        } else {
            // The directory now: a log directory that cannot be made fails at start, not at
            // the first tunnel.
            crate::logs::rotate::create_log_dir(dir)?;
            Some(dir.join("tunnel.log"))
        };
        Ok(Self {
            file: Rc::new(RefCell::new(Lazy {
                file: None,
                path,
                warned: false,
                opts,
                format,
                health: Default::default(),
            })),
            format,
        })
    }

    pub fn write(&mut self, r: &TunnelRecord<'_>) -> anyhow::Result<()> {
        match self.file.borrow_mut().file()? {
            Some(f) => f.write_line(&line(r, self.format), Some(r.ts_ns)),
            None => Ok(()),
        }
    }

    /// The file, for the agent to tick, flush and close with its other logs.
    pub fn shared(&self) -> SharedLog {
        self.file.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_zeek_writes_them() {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        let mut b = a;
        a[12..].copy_from_slice(&[10, 0, 0, 1]);
        b[12..].copy_from_slice(&[10, 0, 0, 2]);
        let r = TunnelRecord {
            ts_ns: 1_500_000_000_123_456_000,
            uid: "CHhAvVGS1DHFjwGM9",
            orig: a,
            orig_p: 0,
            resp: b,
            resp_p: 0,
            tunnel: TunnelType::Gre,
            action: Action::Discover,
        };
        assert_eq!(
            line(&r, LogFormat::Tsv),
            "1500000000.123456\tCHhAvVGS1DHFjwGM9\t10.0.0.1\t0\t10.0.0.2\t0\tTunnel::GRE\tTunnel::DISCOVER"
        );
        let j: serde_json::Value = serde_json::from_str(&line(&r, LogFormat::Json)).unwrap();
        assert_eq!(j["tunnel_type"], "Tunnel::GRE");
        assert_eq!(j["id.resp_h"], "10.0.0.2");
        assert!(tsv_header(0).contains(
            "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\ttunnel_type\taction\n"
        ));
    }

    #[test]
    fn with_conn_log_on_stdout_no_directory_named_dash_is_made() {
        // `--log-dir -`: tunnels are logged nowhere, and nothing is made in the working
        // directory (the tests run in the crate's directory).
        let mut log = TunnelLog::create(Path::new("-"), LogFormat::Tsv, Default::default())
            .expect("no directory to make");
        let r = TunnelRecord {
            ts_ns: 1,
            uid: "CHhAvVGS1DHFjwGM9",
            orig: [0; 16],
            orig_p: 0,
            resp: [0; 16],
            resp_p: 0,
            tunnel: TunnelType::Gre,
            action: Action::Discover,
        };
        log.write(&r).expect("a dropped line is no error");
        log.write(&r).expect("nor is the second");
        assert!(log.file.borrow().warned, "the user is told once");
        assert!(!Path::new("-").exists());
    }
}
