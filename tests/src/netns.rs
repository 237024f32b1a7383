//! Two network namespaces joined by a veth pair, removed again on drop (also when a test
//! panics), and helpers to run code or the agent inside one of them.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `ip` with `args`; its stderr becomes the error.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A pair of namespaces `<prefix>-a` and `<prefix>-b`, joined by veth `<prefix>a` / `<prefix>b`,
/// with IPv4 10.<n>.0.1/2 and IPv6 fd00:<n>::1/2 addresses.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub veth_a: String,
    pub veth_b: String,
    pub a_v4: String,
    pub b_v4: String,
    pub a_v6: String,
    pub b_v6: String,
}

impl NetnsPair {
    /// `subnet` must be unique among tests that run at the same time (it also names things).
    pub fn new(subnet: u8) -> anyhow::Result<NetnsPair> {
        Self::named(&format!("ctt{subnet}"), subnet)
    }

    /// As [`NetnsPair::new`], with names starting with `tag` (at most 12 characters: interface
    /// names are limited to 15).
    pub fn named(tag: &str, subnet: u8) -> anyhow::Result<NetnsPair> {
        let pair = NetnsPair {
            a: format!("{tag}-a"),
            b: format!("{tag}-b"),
            veth_a: format!("{tag}a"),
            veth_b: format!("{tag}b"),
            a_v4: format!("10.{subnet}.0.1"),
            b_v4: format!("10.{subnet}.0.2"),
            a_v6: format!("fd00:{subnet}::1"),
            b_v6: format!("fd00:{subnet}::2"),
        };
        // Left over from a crashed earlier run: start clean.
        let _ = ip(&["netns", "del", &pair.a]);
        let _ = ip(&["netns", "del", &pair.b]);
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        ip(&[
            "link",
            "add",
            &pair.veth_a,
            "netns",
            &pair.a,
            "type",
            "veth",
            "peer",
            "name",
            &pair.veth_b,
            "netns",
            &pair.b,
        ])?;
        for (ns, dev, v4, v6) in [
            (&pair.a, &pair.veth_a, &pair.a_v4, &pair.a_v6),
            (&pair.b, &pair.veth_b, &pair.b_v4, &pair.b_v6),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }

    /// Runs `f` on a thread that has entered namespace `ns` (setns only affects that thread).
    pub fn run_in<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = Path::new("/var/run/netns").join(ns);
        std::thread::spawn(move || {
            let file = File::open(&path).expect("netns file");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace removes the veth end inside it, and with it the peer.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

impl NetnsPair {
    /// The agent in namespace a, watching its veth, writing its logs to `log_dir`, with the
    /// `extra` options; returns once conn.log exists, i.e. the agent is attached and tracking.
    pub fn start_agent(&self, log_dir: &Path, extra: &[&str]) -> anyhow::Result<LiveAgent> {
        let dir = anyhow::Context::context(log_dir.to_str(), "log directory is not UTF-8")?;
        let mut args = vec!["--iface", &self.veth_a, "--log-dir", dir];
        args.extend_from_slice(extra);
        let agent = LiveAgent::start(&self.a, &crate::agent_path(), &args)?;
        anyhow::ensure!(
            wait_for_file(&log_dir.join("conn.log"), Duration::from_secs(20)),
            "the agent did not open {}/conn.log within 20 s",
            dir
        );
        Ok(agent)
    }
}

/// The agent running live inside a namespace; on drop it is stopped (SIGINT) if still running.
pub struct LiveAgent {
    child: Option<Child>,
}

impl LiveAgent {
    pub fn start(ns: &str, agent: &Path, args: &[&str]) -> anyhow::Result<LiveAgent> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(agent)
            .arg("run")
            .args(args)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(LiveAgent { child: Some(child) })
    }

    /// The agent's process id (`ip netns exec` execs it), e.g. to send it SIGHUP.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The agent has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Sends SIGINT (the agent drains and logs every open connection) and waits for the exit.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().expect("running");
        stop_child(&mut child)
    }
}

fn stop_child(child: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    // `ip netns exec` execs the agent, so this PID is the agent's.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            child.kill()?;
            anyhow::bail!("agent did not exit within 20 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for LiveAgent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = stop_child(&mut child);
        }
    }
}

/// Waits until `path` exists (the agent writes its log header at start-up once attached).
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
