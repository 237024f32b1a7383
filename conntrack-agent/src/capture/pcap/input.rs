//! The streaming reader's input: a regular file read directly, a pipe or terminal through a
//! thread of its own (so that a stop request ends a wait for data), and the file header read
//! first.

use super::{MAX_RECORD, SHB_MAGIC, rd_u32};
use crate::util::stop::Stop;
use std::fs::File;
use std::io::{Cursor, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The file as the parser reads it: the bytes already read to recognise the format, then the
/// rest. Keeps the last I/O error, which the parser reports only as `ReadError`.
pub(super) struct Input {
    pub(super) head: Cursor<Vec<u8>>,
    pub(super) source: Source,
    pub(super) error: Arc<Mutex<Option<std::io::Error>>>,
}

/// A regular file is read directly: a read never waits long. A pipe, FIFO or terminal (`read -`
/// fed by `tcpdump -w -`) can wait for ever: it is read by a thread of its own, so that a stop
/// request (`util::stop`) ends the input even while no data comes.
pub(super) enum Source {
    File(File),
    Pump {
        chunks: Receiver<std::io::Result<Vec<u8>>>,
        chunk: Cursor<Vec<u8>>,
        stop: Stop,
    },
}

/// Bytes the pump thread reads at a time (a pipe's buffer), and chunks it may hold ahead.
const PUMP_CHUNK: usize = 64 << 10;
const PUMP_AHEAD: usize = 16;
/// How often a reader waiting for a pipe looks at the stop request.
const STOP_POLL: Duration = Duration::from_millis(50);

impl Source {
    pub(super) fn new(file: File, stop: Stop) -> Self {
        let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        if regular {
            return Source::File(file);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(PUMP_AHEAD);
        std::thread::spawn(move || pump(file, &tx));
        Source::Pump {
            chunks: rx,
            chunk: Cursor::new(Vec::new()),
            stop,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (chunks, chunk, stop) = match self {
            Source::File(f) => return f.read(buf),
            Source::Pump {
                chunks,
                chunk,
                stop,
            } => (chunks, chunk, stop),
        };
        loop {
            let n = chunk.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // A stop request ends the input as its end would (`read` tells them apart).
            if stop.requested() {
                return Ok(0);
            }
            match chunks.recv_timeout(STOP_POLL) {
                Ok(Ok(next)) if next.is_empty() => return Ok(0),
                Ok(Ok(next)) => *chunk = Cursor::new(next),
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            }
        }
    }
}

/// The pump thread: chunks of `file` until its end (an empty chunk) or an error; it ends
/// when the reader is gone.
fn pump(mut file: File, tx: &SyncSender<std::io::Result<Vec<u8>>>) {
    loop {
        let mut buf = vec![0u8; PUMP_CHUNK];
        let msg = match file.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
        };
        let last = !matches!(&msg, Ok(b) if !b.is_empty());
        if tx.send(msg).is_err() || last {
            return;
        }
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        loop {
            match self.source.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return Err(kind.into());
                }
                ok => return ok,
            }
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut Input, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The file header: the parser takes it from its first read, so it is read whole first (24
/// bytes of pcap, or the first section header block of pcapng), and no more: from a pipe, more
/// could wait for data that has not been written yet.
pub(super) fn read_head(input: &mut Input) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; 4];
    let n = read_full(input, &mut head)?;
    if n < 4 {
        head.truncate(n);
        return Ok(head);
    }
    let want = if u32::from_le_bytes([head[0], head[1], head[2], head[3]]) == SHB_MAGIC {
        head.resize(12, 0);
        let n = 4 + read_full(input, &mut head[4..])?;
        if n < 12 {
            head.truncate(n);
            return Ok(head);
        }
        // The block's own byte-order magic says how to read its length; an impossible length
        // is left to the parser to report.
        let be = head[8..12] == [0x1a, 0x2b, 0x3c, 0x4d];
        (rd_u32(&head[4..], be).unwrap_or(0) as usize).clamp(12, MAX_RECORD)
    } else {
        24
    };
    let have = head.len();
    head.resize(want.max(have), 0);
    let n = have + read_full(input, &mut head[have..])?;
    head.truncate(n);
    Ok(head)
}
