//! Two network namespaces joined by a veth pair, created by the bench and removed again on drop
//! (also when a step fails), the processes the bench starts in them (ended by PID), and a raw
//! frame sender for the scale test.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NS_A: &str = "ctbench-a";
pub const NS_B: &str = "ctbench-b";
pub const VETH_A: &str = "ctbencha";
pub const VETH_B: &str = "ctbenchb";
pub const ADDR_A: &str = "10.250.0.1";
pub const ADDR_B: &str = "10.250.0.2";

/// Names and addresses of a namespace pair, so that tasks which may run side by side (the
/// bench, the soak) each have their own.
pub struct Names {
    pub ns_a: &'static str,
    pub ns_b: &'static str,
    pub veth_a: &'static str,
    pub veth_b: &'static str,
    /// Addresses on the /24 of the veth pair.
    pub addr_a: &'static str,
    pub addr_b: &'static str,
}

/// The bench's pair.
pub const BENCH: Names = Names {
    ns_a: NS_A,
    ns_b: NS_B,
    veth_a: VETH_A,
    veth_b: VETH_B,
    addr_a: ADDR_A,
    addr_b: ADDR_B,
};

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces; `Drop` ends the processes started through [`Netns::spawn`] and deletes
/// both namespaces (which deletes the veth pair).
pub struct Netns {
    children: Vec<Child>,
    names: &'static Names,
}

impl Netns {
    /// The bench's pair ([`BENCH`]).
    pub fn create() -> Result<Netns> {
        Netns::create_named(&BENCH)
    }

    pub fn create_named(names: &'static Names) -> Result<Netns> {
        let Names {
            ns_a,
            ns_b,
            veth_a,
            veth_b,
            addr_a,
            addr_b,
        } = *names;
        // Left over from an interrupted earlier run.
        let _ = ip(&["netns", "del", ns_a]);
        let _ = ip(&["netns", "del", ns_b]);
        ip(&["netns", "add", ns_a])?;
        let ns = Netns {
            children: Vec::new(),
            names,
        };
        ip(&["netns", "add", ns_b])?;
        // IPv4 only: with IPv6 the stack of each end sends router solicitations and neighbour
        // discovery of its own for a while after link-up, connections the measurements did
        // not make (the scale section waited for one to expire a minute after its flows).
        for n in [ns_a, ns_b] {
            ip(&[
                "netns",
                "exec",
                n,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
        }
        ip(&[
            "link", "add", veth_a, "netns", ns_a, "type", "veth", "peer", "name", veth_b, "netns",
            ns_b,
        ])?;
        for (n, dev, addr) in [(ns_a, veth_a, addr_a), (ns_b, veth_b, addr_b)] {
            ip(&["-n", n, "link", "set", "lo", "up"])?;
            ip(&["-n", n, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        Ok(ns)
    }

    /// `ip netns exec NS PROGRAM ARGS`, stdout and stderr to `log` (or discarded).
    pub fn spawn(
        &mut self,
        ns: &str,
        program: &Path,
        args: &[&str],
        log: Option<&Path>,
    ) -> Result<u32> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        match log {
            Some(p) => {
                let f = File::create(p)?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Sends `signal` to a process this bench started and waits for it (up to `timeout`, then
    /// SIGKILL). Returns how long it took to exit.
    pub fn stop(&mut self, pid: u32, signal: i32, timeout: Duration) -> Result<Duration> {
        self.stop_with_status(pid, signal, timeout)
            .map(|(took, _)| took)
    }

    /// [`Netns::stop`], with the exit status.
    pub fn stop_with_status(
        &mut self,
        pid: u32,
        signal: i32,
        timeout: Duration,
    ) -> Result<(Duration, std::process::ExitStatus)> {
        let Some(pos) = self.children.iter().position(|c| c.id() == pid) else {
            bail!("process {pid} was not started by the bench");
        };
        let mut child = self.children.remove(pos);
        let t0 = Instant::now();
        // SAFETY: plain kill(2) on our own child's PID (still unreaped, so not reused).
        unsafe { libc::kill(pid as i32, signal) };
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((t0.elapsed(), status));
            }
            if t0.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("process {pid} did not exit within {timeout:?} (killed)");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True while a process started here has not exited.
    pub fn running(&mut self, pid: u32) -> bool {
        self.children
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs a command in `ns` to completion and returns its stdout.
    pub fn output(ns: &str, program: &str, args: &[&str]) -> Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} in {ns}"))?;
        if !out.status.success() {
            bail!(
                "{program} {} in {ns} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
        let _ = ip(&["netns", "del", self.names.ns_a]);
        let _ = ip(&["netns", "del", self.names.ns_b]);
    }
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`). `ip netns exec` execs the program,
/// so the PID of a process started through [`Netns::spawn`] is the program's own.
pub fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `f` on a thread that entered network namespace `ns` (sockets it creates stay bound to
/// that namespace).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = Path::new("/var/run/netns").join(ns);
    std::thread::spawn(move || -> Result<T> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: setns on this thread only, with a valid namespace fd.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// A raw AF_PACKET socket on `dev` inside `ns` (created on a thread that entered the
/// namespace; the socket stays bound to it).
pub struct RawSender {
    fd: OwnedFd,
}

impl RawSender {
    pub fn open(ns: &str, dev: &str) -> Result<RawSender> {
        let dev = std::ffi::CString::new(dev)?;
        let fd = in_netns(ns, move || -> Result<OwnedFd> {
            // SAFETY: plain socket(2); the result is checked.
            let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            if raw < 0 {
                bail!("socket(AF_PACKET): {}", std::io::Error::last_os_error());
            }
            // SAFETY: a fresh fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: valid C string.
            let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {dev:?}");
            }
            // SAFETY: zeroed sockaddr_ll is valid; fields set below.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: valid fd and address of the right size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if r != 0 {
                bail!("bind(AF_PACKET): {}", std::io::Error::last_os_error());
            }
            // Straight to the driver: the qdisc would only add its own cost.
            let one: libc::c_int = 1;
            // SAFETY: valid fd and option value.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&one as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as u32,
                )
            };
            Ok(fd)
        })?;
        Ok(RawSender { fd })
    }

    /// Sends the frames with one sendmmsg(2) per batch; returns how many the kernel took.
    pub fn send_batch(&self, frames: &[Vec<u8>]) -> usize {
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut _,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: zeroed mmsghdr is valid; each points at one iovec that outlives the call.
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0usize;
        while sent < msgs.len() {
            // SAFETY: valid fd and message array.
            let n = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (msgs.len() - sent) as u32,
                    0,
                )
            };
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) || e.raw_os_error() == Some(libc::EAGAIN)
                {
                    std::thread::yield_now();
                    continue;
                }
                break;
            }
            sent += n as usize;
        }
        sent
    }
}
