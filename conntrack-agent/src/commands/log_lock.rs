//! One agent per log directory: `run` and `read` hold an flock on `<log-dir>/.conntrack-agent.lock`
//! for their whole life, with the holder's pid written in it. Two agents writing one directory
//! would cross their files (the second sets aside the conn.log the first is still writing).
//! The kernel releases an flock when its holder exits, however it exits: a lock file left by a
//! dead process never blocks.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name in the log directory (hidden: it is not a log).
pub const LOCK_FILE: &str = ".conntrack-agent.lock";

/// The held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct LogDirLock {
    _file: File,
}

/// Creates `dir` if needed and locks it for this process. Refuses, naming the holder's pid,
/// when another agent holds it.
pub fn lock_log_dir(dir: &Path) -> Result<LogDirLock> {
    crate::logs::rotate::create_log_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    // Not truncated on open: the holder's pid must stay readable for whoever is refused.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        bail!("{}", held_message(dir, &path, parse_pid(&text)));
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(LogDirLock { _file: file })
}

/// The pid a lock file holds (None while its holder has not written it yet).
fn parse_pid(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

/// Why a start is refused, and what to do about it.
fn held_message(dir: &Path, lock: &Path, pid: Option<u32>) -> String {
    let who = match pid {
        Some(pid) => format!("another conntrack-agent (pid {pid})"),
        None => "another conntrack-agent".to_string(),
    };
    format!(
        "{who} is writing logs in {} (it holds {}): two agents in one log directory would \
         overwrite each other's conn.log. Stop that agent first, or use another --log-dir",
        dir.display(),
        lock.display()
    )
}

/// The log directory a command must lock, if any: none when nothing is written there
/// (conn.log on standard output and no other log, spool, extract or state file under it).
pub fn dir_to_lock(log_dir: &Path, to_stdout: bool, writes_other_files: bool) -> Option<PathBuf> {
    if log_dir.as_os_str() == "-" || (to_stdout && !writes_other_files) {
        None
    } else {
        Some(log_dir.to_path_buf())
    }
}

/// [`lock_log_dir`] on the directory [`dir_to_lock`] names, if any.
pub fn lock_if_written(
    log_dir: &Path,
    to_stdout: bool,
    writes_other_files: bool,
) -> Result<Option<LogDirLock>> {
    dir_to_lock(log_dir, to_stdout, writes_other_files)
        .map(|d| lock_log_dir(&d))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let held = lock_log_dir(&logs).expect("first lock");
        let text = std::fs::read_to_string(logs.join(LOCK_FILE)).unwrap();
        assert_eq!(parse_pid(&text), Some(std::process::id()));
        // flock locks belong to the open file: a second open in this process conflicts as
        // another process's would.
        let msg = format!("{:#}", lock_log_dir(&logs).unwrap_err());
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("another --log-dir"), "{msg}");
        drop(held);
        lock_log_dir(&logs).expect("free again once the holder is gone");
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "999999999\n").unwrap();
        let _lock = lock_log_dir(dir.path()).expect("no process holds the flock");
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(parse_pid(&text), Some(std::process::id()), "{text:?}");
    }

    #[test]
    fn stdout_runs_lock_only_a_directory_they_write_in() {
        let d = Path::new("/l");
        assert_eq!(dir_to_lock(d, false, false), Some(d.to_path_buf()));
        assert_eq!(dir_to_lock(d, true, false), None);
        assert_eq!(dir_to_lock(d, true, true), Some(d.to_path_buf()));
        assert_eq!(dir_to_lock(Path::new("-"), true, false), None);
    }
}
