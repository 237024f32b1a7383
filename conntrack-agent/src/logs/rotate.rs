//! Log files as Zeek writes them: a header when the file is opened (TSV), `#close` when it is
//! closed, and rotation by interval and/or size with Zeek's rotated names.
//!
//! Rotation (`--rotate-interval`, `--rotate-size`): the current file gets its `#close` line, is
//! renamed `<name>.<open time>.log` (Zeek's `Log::default_rotation_date_format`,
//! `%Y-%m-%d-%H-%M-%S`, here in UTC like the `#open` lines) and a new `<name>.log` is started
//! with fresh headers. Records are whole lines and a rotation only ever happens between two of
//! them, so no record is split or lost. Interval rotation is due at multiples of the interval
//! since the epoch (a 1 h interval on the hour, as Zeek rounds rotation times when no base
//! time is set) and is driven by network time: the wall clock in `run`, packet time in `read`,
//! as Zeek does when reading a trace (its `logging/rotate` test: a trace starting at 03:00:05
//! gives `test.2011-03-07-03-00-05.log`, then a file per hour named after the first packet
//! past the hour). Size rotation happens before the record that would make the file larger
//! than the limit (a file holds at least one record). Two rotations in the same second get
//! `-1`, `-2`, ... after the time rather than overwrite each other.
//!
//! The open time of a file (its `#open` line and its rotated name) is the network time when it
//! got its first record or timer tick (a file flushed before that uses the wall clock); its
//! `#close` time is the network time it was rotated at, or the last network time seen.

use crate::logs::health::{self, LogHealth, OnWriteError};
use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// When to rotate; both off means never.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationPolicy {
    pub interval: Option<Duration>,
    /// Bytes (headers included).
    pub size: Option<u64>,
    /// Run on each rotated file (Zeek's rotation postprocessor): `sh -c CMD sh FILE`.
    pub command: Option<String>,
    /// Set a log left by an earlier run aside (rotated name) rather than truncate it, also
    /// when rotation is off: `run` never overwrites records (a restart, a handover).
    pub keep_previous: bool,
}

impl RotationPolicy {
    pub fn is_off(&self) -> bool {
        self.interval.is_none() && self.size.is_none()
    }
}

/// Where a log goes and how it rotates (from `--stdout`, `--rotate-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub rotation: RotationPolicy,
    /// Write to standard output instead of `<dir>/<name>.log` (never rotated).
    pub stdout: bool,
}

/// `YYYY-MM-DD-HH-MM-SS` (UTC) for a time in ns.
fn date_ns(ns: i64) -> String {
    fmt_log_date(ns.div_euclid(1_000_000_000))
}

fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The first multiple of `interval` after `t` (ns).
pub fn next_boundary(t: i64, interval: Duration) -> i64 {
    let iv = (interval.as_nanos() as i64).max(1);
    (t.div_euclid(iv) + 1) * iv
}

/// Zeek's rotated name: `<name>.<YYYY-MM-DD-HH-MM-SS>.log`; `n` > 0 for a same-second repeat.
pub fn rotated_name(name: &str, open_ns: i64, n: u32) -> String {
    if n == 0 {
        format!("{name}.{}.log", date_ns(open_ns))
    } else {
        format!("{name}.{}-{n}.log", date_ns(open_ns))
    }
}

/// Where the bytes go. Lines are buffered in [`LogFile`] (whole lines only), not here.
enum Sink {
    File(File),
    Stdout,
    /// Tests: a file on a disk with `room` bytes left, which fills like a real one (a write
    /// takes what fits, the next one fails with ENOSPC).
    #[cfg(test)]
    Limited {
        file: File,
        room: Arc<std::sync::atomic::AtomicUsize>,
    },
}

impl Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stdout => std::io::stdout().write(buf),
            #[cfg(test)]
            Sink::Limited { file, room } => {
                let n = buf.len().min(room.load(Ordering::Relaxed));
                if n == 0 {
                    return Err(std::io::Error::from_raw_os_error(28));
                }
                room.fetch_sub(n, Ordering::Relaxed);
                file.write(&buf[..n])
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout => std::io::stdout().flush(),
            _ => Ok(()),
        }
    }

    fn file(&mut self) -> Option<&mut File> {
        match self {
            Sink::File(f) => Some(f),
            #[cfg(test)]
            Sink::Limited { file, .. } => Some(file),
            Sink::Stdout => None,
        }
    }
}

/// Buffered lines bigger than this are written out.
const BUFFER: usize = 1 << 16;
/// How often a failing log is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A log that rotates on network time: the agent ticks every log it writes, so that an idle
/// one still rotates on time.
pub trait Tick {
    fn tick(&mut self, now_ns: i64) -> anyhow::Result<()>;
    /// Buffered lines to disk (the agent flushes its logs together).
    fn flush(&mut self) -> anyhow::Result<()>;
    /// What became of its records (write errors, held and lost records).
    fn health(&self) -> Arc<LogHealth>;
}

/// Shared with the capability that writes it.
pub type SharedLog = std::rc::Rc<std::cell::RefCell<dyn Tick>>;

impl Tick for LogFile {
    fn tick(&mut self, now_ns: i64) -> anyhow::Result<()> {
        LogFile::tick(self, now_ns)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        LogFile::flush(self)
    }
    fn health(&self) -> Arc<LogHealth> {
        self.health.clone()
    }
}

/// Builds the TSV header for an open time in seconds; None for headerless logs (JSON).
pub type HeaderFn = Box<dyn Fn(i64) -> String + Send>;

/// One log: `<dir>/<name>.log` (or stdout), with Zeek's header/`#close` when `header` is set.
pub struct LogFile {
    dir: PathBuf,
    name: String,
    path: PathBuf,
    sink: Sink,
    /// Whole lines not yet written (the tail of a line that failed half way is cut from the
    /// file and stays here).
    buf: Vec<u8>,
    /// Lines in `buf` (headers included: what the backlog bounds).
    buf_lines: u64,
    /// Length of the file on disk: always at a line end.
    on_disk: u64,
    /// Fail or hold on write errors ([`health::policy`] when created).
    on_error: OnWriteError,
    /// While failing: when to try again.
    retry_at: Option<std::time::Instant>,
    /// How long to wait before trying again ([`RETRY`]; tests shorten it).
    retry: Duration,
    health: Arc<LogHealth>,
    header: Option<HeaderFn>,
    /// Every line is flushed at once (logs read with `tail -f` while the agent runs).
    flush_each: bool,
    policy: RotationPolicy,
    /// Network time the current file was opened (None until the first record or tick).
    open_ns: Option<i64>,
    /// The latest network time seen.
    last_ns: Option<i64>,
    header_written: bool,
    bytes: u64,
    records_in_file: u64,
    next_rotate_ns: Option<i64>,
    closed: bool,
    rotated: Vec<PathBuf>,
    /// Post-rotation commands still running (reaped as they end, waited for at close).
    children: Vec<std::process::Child>,
}

impl LogFile {
    /// `path`: the live file (`<dir>/<name>.log` for logs in the log directory).
    pub fn create(
        path: &Path,
        name: &str,
        header: Option<HeaderFn>,
        opts: LogOptions,
        flush_each: bool,
    ) -> anyhow::Result<Self> {
        let dir = dir_of(path);
        let mut leftover = None;
        let sink = if opts.stdout {
            Sink::Stdout
        } else {
            create_log_dir(&dir)?;
            if !opts.rotation.is_off() || opts.rotation.keep_previous {
                leftover = keep_leftover(&dir, name, path);
            }
            Sink::File(open_new(path)?)
        };
        let policy = if opts.stdout {
            RotationPolicy::default()
        } else {
            opts.rotation
        };
        let mut log = Self::create_with_sink(path, name, header, policy, sink, flush_each);
        if let Some(old) = leftover {
            log.postprocess(&old);
            log.rotated.push(old);
        }
        Ok(log)
    }

    /// A headerless log appended to across runs, never rotated, each line written at once
    /// (alerts.log: the record of what was sent).
    pub fn append(path: &Path) -> anyhow::Result<Self> {
        create_log_dir(&dir_of(path))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let on_disk = file.metadata().map_or(0, |m| m.len());
        let name = path
            .file_stem()
            .map_or_else(|| "log".into(), |s| s.to_string_lossy().into_owned());
        let mut log = Self::create_with_sink(
            path,
            &name,
            None,
            RotationPolicy::default(),
            Sink::File(file),
            true,
        );
        log.on_disk = on_disk;
        Ok(log)
    }

    fn create_with_sink(
        path: &Path,
        name: &str,
        header: Option<HeaderFn>,
        policy: RotationPolicy,
        sink: Sink,
        flush_each: bool,
    ) -> Self {
        let dir = dir_of(path);
        let shown = match sink {
            Sink::Stdout => format!("{name}.log on standard output"),
            _ => path.display().to_string(),
        };
        Self {
            dir,
            name: name.to_string(),
            path: path.to_path_buf(),
            sink,
            buf: Vec::with_capacity(BUFFER),
            buf_lines: 0,
            on_disk: 0,
            on_error: health::policy(),
            retry_at: None,
            retry: RETRY,
            health: LogHealth::new(&shown),
            header,
            flush_each,
            policy,
            open_ns: None,
            last_ns: None,
            header_written: false,
            bytes: 0,
            records_in_file: 0,
            next_rotate_ns: None,
            closed: false,
            rotated: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Files rotated so far, oldest first.
    #[cfg(test)]
    pub fn rotated(&self) -> &[PathBuf] {
        &self.rotated
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What became of its records.
    pub fn health(&self) -> Arc<LogHealth> {
        self.health.clone()
    }

    /// Fixes the open time at `now_ns` if not yet known, and writes the header. Inline, as
    /// two tests: `tick` calls it for every packet of a replay.
    #[inline]
    fn opened(&mut self, now_ns: i64) -> std::io::Result<()> {
        if self.open_ns.is_none() || !self.header_written {
            self.open_now(now_ns);
        }
        Ok(())
    }

    /// [`LogFile::opened`] when there is something to do.
    #[cold]
    fn open_now(&mut self, now_ns: i64) {
        if self.open_ns.is_none() {
            self.open_ns = Some(now_ns);
            self.next_rotate_ns = self.policy.interval.map(|iv| next_boundary(now_ns, iv));
        }
        if !self.header_written {
            self.header_written = true;
            if let Some(h) = &self.header {
                let text = h(self.open_ns.unwrap_or(now_ns).div_euclid(1_000_000_000));
                self.buf_lines += text.bytes().filter(|&b| b == b'\n').count() as u64;
                self.buf.extend_from_slice(text.as_bytes());
                self.bytes += text.len() as u64;
            }
        }
    }

    /// Network time is `now_ns`: rotates when an interval boundary has passed. As in Zeek,
    /// the rotation happens at the network time that passed the boundary (in `read`, the
    /// first packet after it), which closes the old file and opens the new one. A failing log
    /// rotates once it can be written again (the `#close` line must reach the file).
    #[inline]
    pub fn tick(&mut self, now_ns: i64) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.last_ns = Some(self.last_ns.map_or(now_ns, |l| l.max(now_ns)));
        self.opened(now_ns)?;
        if self.next_rotate_ns.is_some_and(|at| now_ns >= at) && self.retry_at.is_none() {
            self.rotate(now_ns)?;
        }
        Ok(())
    }

    /// When the next interval rotation is due (network time), if one is.
    pub fn next_rotation_ns(&self) -> Option<i64> {
        self.next_rotate_ns
    }

    /// Appends one record (`line` without its newline) at network time `now_ns` (None: the
    /// wall clock).
    pub fn write_line(&mut self, line: &str, now_ns: Option<i64>) -> anyhow::Result<()> {
        self.write_line_bytes(line.as_bytes(), now_ns)
    }

    /// [`LogFile::write_line`] of a line given as its bytes (text the caller made, e.g. ASCII
    /// written straight into a buffer: no `str` to make of it first).
    pub fn write_line_bytes(&mut self, line: &[u8], now_ns: Option<i64>) -> anyhow::Result<()> {
        let now = now_ns.unwrap_or_else(wall_ns);
        self.tick(now)?;
        if self.health.reader_gone.load(Ordering::Relaxed) {
            self.health.drop_records(1);
            return Ok(());
        }
        let len = line.len() as u64 + 1;
        if let Some(limit) = self.policy.size
            && self.records_in_file > 0
            && self.bytes + len > limit
            && self.retry_at.is_none()
        {
            self.rotate(now)?;
        }
        if let OnWriteError::Hold { backlog } = self.on_error
            && self.retry_at.is_some()
            && self.buf_lines >= backlog
        {
            self.health.drop_records(1);
            return Ok(());
        }
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.buf_lines += 1;
        self.bytes += len;
        self.records_in_file += 1;
        if self.flush_each || self.buf.len() >= BUFFER {
            self.write_out()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        if !self.closed {
            // Headers are visible once flushed even before the first record.
            let now = self.open_ns.unwrap_or_else(wall_ns);
            self.opened(now)?;
        }
        self.write_out()
    }

    /// Writes the buffered lines, as far as the sink takes them. On an error, `read` gets it
    /// (naming the file); `run` warns once and keeps the lines, trying again a second later.
    fn write_out(&mut self) -> anyhow::Result<()> {
        if self.health.reader_gone.load(Ordering::Relaxed)
            || self
                .retry_at
                .is_some_and(|at| std::time::Instant::now() < at)
        {
            return Ok(());
        }
        let result = self.write_buffered().and_then(|()| self.sink.flush());
        let Err(e) = result else {
            self.retry_at = None;
            if self.health.failing.swap(false, Ordering::Relaxed) {
                log::warn!("{}: writable again; held records written", self.health.name);
            }
            self.health.pending.store(0, Ordering::Relaxed);
            return Ok(());
        };
        if matches!(self.sink, Sink::Stdout) && e.kind() == std::io::ErrorKind::BrokenPipe {
            // `... --stdout | head`: the reader is gone; the rest is dropped, and said so once.
            self.health.reader_gone.store(true, Ordering::Relaxed);
            self.health.drop_records(self.buf_lines);
            self.buf.clear();
            self.buf_lines = 0;
            log::warn!(
                "standard output was closed by its reader: {} records are dropped from now on",
                self.name
            );
            return Ok(());
        }
        let first = self.health.fail(&e.to_string());
        self.health.pending.store(self.buf_lines, Ordering::Relaxed);
        match self.on_error {
            OnWriteError::Fail => {
                Err(anyhow::Error::new(e).context(format!("cannot write {}", self.health.name)))
            }
            OnWriteError::Hold { backlog } => {
                if first || self.retry_at.is_none() {
                    log::warn!(
                        "cannot write {}: {e}; tracking goes on, up to {backlog} records are \
                         held in memory and written in order when it can be written again \
                         (tried every second)",
                        self.health.name
                    );
                }
                self.retry_at = Some(std::time::Instant::now() + self.retry);
                Ok(())
            }
        }
    }

    /// Writes `buf` out; on an error, the file is cut back to the last whole line written
    /// (no record is ever split) and the rest stays in `buf`.
    fn write_buffered(&mut self) -> std::io::Result<()> {
        let mut done = 0;
        let result = loop {
            if done == self.buf.len() {
                break Ok(());
            }
            match self.sink.write(&self.buf[done..]) {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if result.is_ok() {
            self.on_disk += done as u64;
            self.buf.clear();
            self.buf_lines = 0;
            return Ok(());
        }
        let whole = self.buf[..done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if let Some(f) = self.sink.file() {
            self.on_disk += whole as u64;
            if whole < done {
                // A truncation frees blocks: it works on a full disk too.
                f.set_len(self.on_disk)?;
                f.seek(std::io::SeekFrom::Start(self.on_disk))?;
            }
        }
        self.buf.drain(..whole);
        self.buf_lines = self.buf.iter().filter(|&&b| b == b'\n').count() as u64;
        result
    }

    /// `#close` (with the time it was closed: the wall clock, or network time on rotation).
    fn write_close(&mut self, close_ns: i64) -> anyhow::Result<()> {
        if self.header.is_some() {
            self.buf
                .extend_from_slice(format!("#close\t{}\n", date_ns(close_ns)).as_bytes());
            self.buf_lines += 1;
        }
        self.write_out()
    }

    /// Closes the current file, renames it after its open time and starts a new one opened
    /// at `at_ns`.
    fn rotate(&mut self, at_ns: i64) -> anyhow::Result<()> {
        let open = self.open_ns.unwrap_or(at_ns);
        let target = (0u32..)
            .map(|n| self.dir.join(rotated_name(&self.name, open, n)))
            .find(|p| !p.exists())
            .expect("some suffix is free");
        // Renamed while still open, before `#close`: if the rename fails, the records go on
        // in the same file rather than being lost or stopping the agent.
        if let Err(e) = std::fs::rename(&self.path, &target) {
            log::error!(
                "cannot rotate {} to {}: {e}; rotation is off, the log goes on in {}",
                self.path.display(),
                target.display(),
                self.path.display()
            );
            self.policy = RotationPolicy::default();
            self.next_rotate_ns = None;
            return Ok(());
        }
        self.write_close(at_ns)?;
        if self.retry_at.is_some() {
            // The `#close` did not fit: the old file keeps its held lines until they do.
            // (Rare: the disk filled just now.) Later records go there too.
            return Ok(());
        }
        self.sink = Sink::File(open_new(&self.path)?);
        self.on_disk = 0;
        self.postprocess(&target);
        self.rotated.push(target);
        self.open_ns = None;
        self.header_written = false;
        self.bytes = 0;
        self.records_in_file = 0;
        self.opened(at_ns)?;
        Ok(())
    }

    /// Starts the post-rotation command on `file` (not waited for: the agent goes on).
    fn postprocess(&mut self, file: &Path) {
        self.children
            .retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        let Some(cmd) = &self.policy.command else {
            return;
        };
        let child = std::process::Command::new("sh")
            .args(["-c", cmd, "sh"])
            .arg(file)
            .stdin(std::process::Stdio::null())
            // Its output must not mix with conn.log (which may be stdout elsewhere).
            .stdout(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(c) => self.children.push(c),
            Err(e) => log::error!("--rotate-command on {}: {e}", file.display()),
        }
    }

    /// Writes `#close` and flushes; waits for post-rotation commands; later calls do nothing.
    /// Records a failing log still holds get one last try (`run`'s stop): what does not fit
    /// then is lost, and counted.
    pub fn close(&mut self) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        // Network time at the end (the last packet in `read`, as Zeek's `#close`).
        let now = self.last_ns.unwrap_or_else(wall_ns);
        self.opened(self.open_ns.unwrap_or(now))?;
        self.closed = true;
        self.retry_at = None;
        self.write_close(now)?;
        if self.retry_at.is_some() {
            let lost = self
                .buf_lines
                .saturating_sub(u64::from(self.header.is_some()));
            self.health.drop_records(lost);
            self.health.pending.store(0, Ordering::Relaxed);
            log::error!(
                "{}: {lost} records could not be written before exit",
                self.health.name
            );
            self.buf.clear();
            self.buf_lines = 0;
        }
        for mut c in self.children.drain(..) {
            match c.wait() {
                Ok(s) if !s.success() => log::warn!("--rotate-command exited with {s}"),
                Err(e) => log::warn!("--rotate-command: {e}"),
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// With rotation on, and always in `run`, a log left by an earlier run (stopped before it could
/// rotate it, killed, or handing over to this one) is rotated rather than overwritten, named after its last change (Zeek rotates such
/// leftover logs at start too). Returns its new path.
fn keep_leftover(dir: &Path, name: &str, path: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok().filter(|m| m.len() > 0)?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as i64;
    let target = (0u32..)
        .map(|n| dir.join(rotated_name(name, mtime, n)))
        .find(|p| !p.exists())
        .expect("some suffix is free");
    match std::fs::rename(path, &target) {
        Ok(()) => {
            log::warn!(
                "{} was left by an earlier run: rotated to {}",
                path.display(),
                target.display()
            );
            Some(target)
        }
        Err(e) => {
            log::warn!("cannot keep {} from an earlier run: {e}", path.display());
            None
        }
    }
}

/// The directory a log file lives in (`.` for a bare file name).
fn dir_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// The log directory, made if missing; a clear error when a file is in the way.
pub fn create_log_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "log directory {} is not a directory (a file of that name exists): give --log-dir \
             a directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))
}

fn open_new(path: &Path) -> anyhow::Result<File> {
    File::create(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// `--rotate-size`: bytes, with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("bad size {s:?}: use bytes, or a K, M or G suffix")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad size {s:?}: expected e.g. 1000000, 100M or 1G"))?;
    match n.checked_mul(mult) {
        Some(0) => Err("the size must be greater than 0".into()),
        Some(v) => Ok(v),
        None => Err(format!("size {s:?} is too large")),
    }
}

/// `--rotate-interval`: humantime's syntax (`1h`, `30m`, `1day`).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("bad interval {s:?}: {e} (e.g. 1h, 15m, 1day)"))?;
    if d < Duration::from_secs(1) {
        return Err("the rotation interval must be at least 1s".into());
    }
    Ok(d)
}

/// `YYYY-MM-DD-HH-MM-SS` (UTC) as in Zeek's `#open` / `#close` lines.
pub fn fmt_log_date(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let rem = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}-{:02}-{:02}-{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests;
