//! `cargo xtask soak [--minutes N]`: the release agent under steady load for N minutes (root).
//!
//! Two namespaces joined by a veth (`ctsoak-a`/`ctsoak-b`, 10.120.0.0/24), the agent in `a` on
//! its veth with 10 s rotation, its metrics endpoint and an alert config whose webhook is a
//! receiver run here (in `a`, on loopback) that answers 500 to about 1 request in 5. Traffic
//! from `a` to servers in `b`: about 5,000 new short TCP connections per second plus 4
//! long-lived flows that send every 100 ms. Meanwhile the agent's RSS and open fds are sampled;
//! at the end it is stopped with SIGINT and the run passes when:
//! - every connection the generator made is in conn.log (all rotated files) exactly once, every
//!   record whole, every rotated file closed with `#close`;
//! - the kernel dropped nothing (ring buffer full, table full) and no log record was dropped;
//! - every alert in alerts.log reached the receiver with a 200, or is still in the spool, and
//!   nothing went to the dead letter;
//! - RSS and fds stayed flat after the warm-up (see [`leak_check`]);
//! - the agent exited 0.

use crate::agent::{self, Profile};
use crate::bench::netns::{Names, Netns, rss_kib};
use crate::bench::{catch_interrupts, check_interrupted};
use crate::util::{self, step};
use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: cargo xtask soak [--minutes N]";

/// Names that clash with neither the bench's pair nor the tests'.
const NAMES: Names = Names {
    ns_a: "ctsoak-a",
    ns_b: "ctsoak-b",
    veth_a: "ctsoaka",
    veth_b: "ctsoakb",
    addr_a: "10.120.0.1",
    addr_b: "10.120.0.2",
};

/// New short connections per second asked of the generator (paced; what the machine sustains
/// is reported, not asserted).
const TARGET_RATE: f64 = 5000.0;
const CLIENT_THREADS: usize = 6;
const SERVER_THREADS: usize = 3;
/// Client ports of the short connections, bound explicitly (see [`Tuples`]).
const CLIENT_PORT_LO: u16 = 20000;
const CLIENT_PORTS: usize = 40000;
/// First server port of the short connections; [`Tuples::server_ports`] of them follow.
const SERVER_PORT_LO: u16 = 30000;
/// The alert rule `soak-burst` fires on the short connections from these client ports
/// (0.2 % of them: about 10 alerts a second at 5,000 connections a second).
const ALERT_CLIENT_PORTS: (u16, u16) = (CLIENT_PORT_LO, CLIENT_PORT_LO + 79);
/// The long-lived flows: their client ports and server port.
const LONG_FLOWS: u16 = 4;
const LONG_CLIENT_PORT_LO: u16 = 10001;
const LONG_PORT: u16 = 8999;
/// The `soak-long` rule: orig IP bytes each long flow passes within seconds.
const LONG_ALERT_BYTES: u64 = 2000;
/// The agent's metrics endpoint, inside namespace a.
const METRICS_PORT: u16 = 19750;
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

pub fn soak(args: &[String]) -> Result<()> {
    let mut minutes = 1.0f64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => {
                let v = it
                    .next()
                    .with_context(|| format!("--minutes needs a value ({USAGE})"))?;
                minutes =
                    v.parse().ok().filter(|m: &f64| *m > 0.0).with_context(|| {
                        format!("--minutes {v}: give a positive number ({USAGE})")
                    })?;
            }
            other => bail!("soak: unknown argument `{other}` ({USAGE})"),
        }
    }
    soak_for(Duration::from_secs_f64(minutes * 60.0))
}

/// The soak for `length` of traffic; skipped with a note when not root.
pub fn soak_for(length: Duration) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        step(
            "soak skipped: it loads the eBPF program and creates network namespaces, which needs root (sudo cargo xtask soak)",
        );
        return Ok(());
    }
    agent::build(Profile::Release)?;
    catch_interrupts();
    step(&format!(
        "soak: {:.0} s of traffic through a live agent ({TARGET_RATE:.0} new connections/s asked, {LONG_FLOWS} long flows)",
        length.as_secs_f64()
    ));
    let out = util::root().join("target/soak");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let run = run_soak(length, &out)?;
    write_samples(&run.samples, &out.join("samples.tsv"))?;
    let verdict = verdict(&run, &out)?;
    print_report(&run, &verdict, &out);
    if !verdict.failures.is_empty() {
        bail!(
            "soak failed: {} (agent log, conn.log files and alerts in {})",
            verdict.failures.join("; "),
            out.display()
        );
    }
    Ok(())
}

/// What the run measured, for the checks.
struct Run {
    length: Duration,
    tuples: Tuples,
    /// Per tuple index: 0 not tried, [`MADE`], [`FAILED`].
    made: Vec<u8>,
    made_count: u64,
    connect_failures: Vec<String>,
    connect_failed_count: u64,
    errors_after_connect: u64,
    out_of_tuples: bool,
    traffic_secs: f64,
    long_made: u16,
    samples: Vec<Sample>,
    warmup: Duration,
    metrics: String,
    exit: std::process::ExitStatus,
    stop_took: Duration,
    hook: HookCounts,
    agent_log: String,
}

const MADE: u8 = 1;
const FAILED: u8 = 2;

#[derive(Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
}

/// The short connections' 4-tuples, each used at most once in the run, so that "logged
/// exactly once" is a plain count per (client port, server port): client ports are bound
/// explicitly from [`CLIENT_PORTS`] ports (the kernel's ephemeral choice would reuse a port
/// once its TIME_WAIT ends, and at 5,000/s the 28,000 ephemeral ports wrap within 6 s), and
/// enough server ports that client ports × server ports exceeds the run's connections with
/// room to spare. A client port comes back every 8 s or so with another server port; its
/// TIME_WAIT sockets do not block the bind (SO_REUSEADDR, a different 4-tuple).
#[derive(Clone, Copy)]
struct Tuples {
    server_ports: usize,
}

impl Tuples {
    fn for_run(length: Duration) -> Tuples {
        let needed = TARGET_RATE * length.as_secs_f64() * 1.3;
        Tuples {
            server_ports: ((needed / CLIENT_PORTS as f64).ceil() as usize).max(8),
        }
    }

    fn len(self) -> usize {
        CLIENT_PORTS * self.server_ports
    }

    fn index(self, client_port: u16, server_port: u16) -> Option<usize> {
        let c = usize::from(client_port.checked_sub(CLIENT_PORT_LO)?);
        let s = usize::from(server_port.checked_sub(SERVER_PORT_LO)?);
        (c < CLIENT_PORTS && s < self.server_ports).then_some(c * self.server_ports + s)
    }

    fn ports(self, index: usize) -> (u16, u16) {
        (
            CLIENT_PORT_LO + (index / self.server_ports) as u16,
            SERVER_PORT_LO + (index % self.server_ports) as u16,
        )
    }

    /// The `j`-th tuple of client thread `t`: its client ports in turn (ports `t`, `t + K`,
    /// ... of the range), each round with the next server port, so consecutive connections
    /// spread over the listeners and no tuple comes twice. None when the thread used them all.
    fn nth_of_thread(self, t: usize, j: usize) -> Option<(u16, u16)> {
        let own = (CLIENT_PORTS - t).div_ceil(CLIENT_THREADS);
        let (a, round) = (j % own, j / own);
        if round >= self.server_ports {
            return None;
        }
        let client = CLIENT_PORT_LO + (t + a * CLIENT_THREADS) as u16;
        let server = SERVER_PORT_LO + ((a + round) % self.server_ports) as u16;
        Some((client, server))
    }
}

fn run_soak(length: Duration, out: &Path) -> Result<Run> {
    let tuples = Tuples::for_run(length);
    let mut ns = Netns::create_named(&NAMES)?;
    let hook_stop = Arc::new(AtomicBool::new(false));
    let _hook_guard = SetOnDrop(hook_stop.clone());
    let hook = Receiver::start(hook_stop.clone())?;

    let log_dir = out.join("logs");
    let config = out.join("soak.toml");
    std::fs::write(&config, alert_config(hook.port))
        .with_context(|| format!("writing {}", config.display()))?;
    let agent_log = out.join("agent.log");
    let agent_bin = agent::binary(Profile::Release);
    let metrics_addr = format!("127.0.0.1:{METRICS_PORT}");
    let args = [
        "run",
        "--iface",
        NAMES.veth_a,
        "--log-dir",
        path_str(&log_dir)?,
        "--rotate-interval",
        "10s",
        "--no-status",
        "--metrics-addr",
        &metrics_addr,
        "--config",
        path_str(&config)?,
    ];
    let pid = ns.spawn(NAMES.ns_a, &agent_bin, &args, Some(&agent_log))?;
    wait_tracking(&mut ns, pid, &agent_log)?;

    let traffic = Traffic::start(tuples, length)?;
    let warmup = (length / 5).max(Duration::from_secs(10));
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut next_sample = t0;
    while t0.elapsed() < length {
        check_interrupted()?;
        if !ns.running(pid) {
            bail!(
                "the agent exited during the run (see {})",
                agent_log.display()
            );
        }
        if Instant::now() >= next_sample {
            samples.push(Sample {
                at: t0.elapsed(),
                rss_kib: rss_kib(pid, "VmRSS:").unwrap_or(0),
                fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            });
            next_sample += SAMPLE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = traffic.stop_short()?;
    // The last connections' close timers (5 s) are left to the shutdown drain on purpose:
    // SIGINT must log what is open. A short pause lets the last events reach the agent
    // before the counters are read.
    std::thread::sleep(Duration::from_secs(1));
    let metrics = http_get_in(NAMES.ns_a, METRICS_PORT, "/metrics")
        .context("scraping the agent's /metrics before stopping it")?;
    let (stop_took, exit) = ns.stop_with_status(pid, libc::SIGINT, Duration::from_secs(120))?;
    // The long flows stay open until the agent has logged them at its exit.
    drop(ended.long_streams);
    drop(ns);
    hook_stop.store(true, Ordering::SeqCst);
    let hook = hook.finish();
    Ok(Run {
        length,
        tuples,
        made: ended.made,
        made_count: ended.made_count,
        connect_failures: ended.connect_failures,
        connect_failed_count: ended.connect_failed_count,
        errors_after_connect: ended.errors_after_connect,
        out_of_tuples: ended.out_of_tuples,
        traffic_secs: ended.secs,
        long_made: ended.long_made,
        samples,
        warmup,
        metrics,
        exit,
        stop_took,
        hook,
        agent_log: std::fs::read_to_string(&agent_log).unwrap_or_default(),
    })
}

/// The RSS and fd samples, for a look at the curve when the leak check fails.
fn write_samples(samples: &[Sample], path: &Path) -> Result<()> {
    let mut text = String::from("seconds\trss_kib\tfds\n");
    for s in samples {
        text += &format!("{:.1}\t{}\t{}\n", s.at.as_secs_f64(), s.rss_kib, s.fds);
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The alert config: `soak-burst` on a slice of the short connections (third packet from the
/// client: the data segment after SYN and ACK) and `soak-long` on each long flow, both to the
/// receiver; quick retries so that the 500s are retried within the run.
fn alert_config(hook_port: u16) -> String {
    let (lo, hi) = ALERT_CLIENT_PORTS;
    format!(
        "[alerts]\ndrain_timeout = \"30s\"\n\n\
         [alerts.webhooks.soak]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\ntimeout = \"2s\"\n\
         retry_base = \"50ms\"\nretry_max = \"500ms\"\n\n\
         [[alerts.rules]]\nname = \"soak-burst\"\nmetric = \"orig_packets\"\nthreshold = 3\n\
         webhooks = [\"soak\"]\nmatch = {{ proto = \"tcp\", orig_ports = [\"{lo}-{hi}\"] }}\n\n\
         [[alerts.rules]]\nname = \"soak-long\"\nmetric = \"orig_bytes\"\n\
         threshold = {LONG_ALERT_BYTES}\nwebhooks = [\"soak\"]\n\
         match = {{ proto = \"tcp\", resp_ports = [{LONG_PORT}] }}\n"
    )
}

fn wait_tracking(ns: &mut Netns, pid: u32, log: &Path) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("tracking on") {
            return Ok(());
        }
        if !ns.running(pid) {
            bail!(
                "the agent exited at start: {}",
                text.lines().last().unwrap_or("(no output)")
            );
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!(
                "the agent did not start tracking within 120 s (see {})",
                log.display()
            );
        }
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets the flag when dropped: background threads end also when the soak fails.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Moves the calling thread into namespace `ns` (sockets it then creates live there).
fn enter_netns(ns: &str) -> Result<()> {
    let path = Path::new("/var/run/netns").join(ns);
    let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on this thread only, with a valid namespace fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside `ns` and waits for it.
fn in_netns<T: Send + 'static>(
    ns: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        enter_netns(ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in {ns} panicked"))?
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: an all-zero sockaddr_in is valid; the fields are set below.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    sa
}

/// A TCP socket with SO_REUSEADDR, bound to `local`.
fn bound_socket(local: SocketAddrV4) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    let sa = sockaddr(local);
    // SAFETY: valid fd, option value and address of the right sizes.
    let ok = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        ) == 0
            && libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            ) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Connects from `local` (an explicit client port) to `remote`; connect gives up after
/// `timeout` (SO_SNDTIMEO bounds a blocking connect).
fn connect_from(
    local: SocketAddrV4,
    remote: SocketAddrV4,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let fd = bound_socket(local)?;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    let sa = sockaddr(remote);
    // SAFETY: valid fd, option value and address of the right sizes.
    let ok = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        ) == 0
            && libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            ) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpStream::from(fd))
}

/// A listener on `local` with a deep accept queue (thousands of connections a second).
fn listen_on(local: SocketAddrV4) -> Result<TcpListener> {
    let fd = bound_socket(local).with_context(|| format!("binding {local}"))?;
    // SAFETY: valid fd.
    if unsafe { libc::listen(fd.as_raw_fd(), 4096) } != 0 {
        bail!("listen on {local}: {}", std::io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

/// Accepts on `listeners` until `stop`, handing each connection to `handle`.
fn accept_loop(listeners: &[TcpListener], stop: &AtomicBool, mut handle: impl FnMut(TcpStream)) {
    for l in listeners {
        let _ = l.set_nonblocking(true);
    }
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: a valid array of pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        for (l, p) in listeners.iter().zip(&fds) {
            if p.revents == 0 {
                continue;
            }
            while let Ok((s, _)) = l.accept() {
                let _ = s.set_nonblocking(false);
                handle(s);
            }
        }
    }
}

/// Reads until the peer's FIN (or an error, or 5 s).
fn read_to_eof(s: &mut TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What a short-connection client thread did.
#[derive(Default)]
struct ClientTally {
    made: Vec<u32>,
    failed: Vec<u32>,
    failures: Vec<String>,
    errors_after_connect: u64,
    out_of_tuples: bool,
}

/// The long flows, still open, and how many were opened.
type LongFlows = (Vec<TcpStream>, u16);

/// The traffic generator: servers in b, clients in a.
struct Traffic {
    stop_short: Arc<AtomicBool>,
    stop_rest: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Result<ClientTally>>>,
    long: Option<JoinHandle<Result<LongFlows>>>,
    servers: Vec<JoinHandle<()>>,
    tuples: Tuples,
    started: Instant,
}

/// The generator's end: what it made and the long flows, still open.
struct Ended {
    made: Vec<u8>,
    made_count: u64,
    connect_failures: Vec<String>,
    connect_failed_count: u64,
    errors_after_connect: u64,
    out_of_tuples: bool,
    secs: f64,
    long_streams: Vec<TcpStream>,
    long_made: u16,
}

impl Traffic {
    fn start(tuples: Tuples, length: Duration) -> Result<Traffic> {
        let addr_a: Ipv4Addr = NAMES.addr_a.parse()?;
        let addr_b: Ipv4Addr = NAMES.addr_b.parse()?;
        let stop_short = Arc::new(AtomicBool::new(false));
        let stop_rest = Arc::new(AtomicBool::new(false));
        let mut t = Traffic {
            stop_short: stop_short.clone(),
            stop_rest: stop_rest.clone(),
            clients: Vec::new(),
            long: None,
            servers: Vec::new(),
            tuples,
            started: Instant::now(),
        };
        // Listeners are made in b (a socket stays in the namespace it was created in).
        let n = tuples.server_ports;
        let (short, long) = in_netns(NAMES.ns_b, move || {
            let short = (0..n)
                .map(|i| listen_on(SocketAddrV4::new(addr_b, SERVER_PORT_LO + i as u16)))
                .collect::<Result<Vec<_>>>()?;
            let long = listen_on(SocketAddrV4::new(addr_b, LONG_PORT))?;
            Ok((short, long))
        })?;
        let mut groups: Vec<Vec<TcpListener>> = (0..SERVER_THREADS).map(|_| Vec::new()).collect();
        for (i, l) in short.into_iter().enumerate() {
            groups[i % SERVER_THREADS].push(l);
        }
        for group in groups {
            let stop = stop_rest.clone();
            t.servers.push(std::thread::spawn(move || {
                accept_loop(&group, &stop, |mut s| {
                    let _ = read_to_eof(&mut s);
                });
            }));
        }
        let stop = stop_rest.clone();
        t.servers.push(std::thread::spawn(move || {
            accept_loop(std::slice::from_ref(&long), &stop, |mut s| {
                std::thread::spawn(move || read_to_eof_forever(&mut s));
            });
        }));

        let stop = stop_short.clone();
        t.long = Some(std::thread::spawn(move || {
            long_flows(addr_a, addr_b, &stop)
        }));
        for c in 0..CLIENT_THREADS {
            let stop = stop_short.clone();
            t.clients.push(std::thread::spawn(move || {
                enter_netns(NAMES.ns_a)?;
                Ok(short_client(c, tuples, addr_a, addr_b, length, &stop))
            }));
        }
        t.started = Instant::now();
        Ok(t)
    }

    /// Stops the clients and collects what they made; the servers keep running until drop.
    fn stop_short(mut self) -> Result<Ended> {
        self.stop_short.store(true, Ordering::SeqCst);
        let mut made = vec![0u8; self.tuples.len()];
        let (mut made_count, mut failed_count, mut after, mut out) = (0u64, 0u64, 0u64, false);
        let mut failures = Vec::new();
        for h in self.clients.drain(..) {
            let tally = h
                .join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            for i in tally.made {
                made[i as usize] = MADE;
                made_count += 1;
            }
            for i in tally.failed {
                made[i as usize] = FAILED;
                failed_count += 1;
            }
            failures.extend(tally.failures);
            after += tally.errors_after_connect;
            out |= tally.out_of_tuples;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let (long_streams, long_made) = self
            .long
            .take()
            .context("long flows already collected")?
            .join()
            .map_err(|_| anyhow::anyhow!("the long-flow thread panicked"))??;
        Ok(Ended {
            made,
            made_count,
            connect_failures: failures,
            connect_failed_count: failed_count,
            errors_after_connect: after,
            out_of_tuples: out,
            secs,
            long_streams,
            long_made,
        })
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop_short.store(true, Ordering::SeqCst);
        self.stop_rest.store(true, Ordering::SeqCst);
        for h in self.clients.drain(..) {
            let _ = h.join();
        }
        if let Some(h) = self.long.take() {
            let _ = h.join();
        }
        for h in self.servers.drain(..) {
            let _ = h.join();
        }
    }
}

/// The long flows' server side: reads until the client goes away.
fn read_to_eof_forever(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// Opens the long flows and sends 100 bytes on each every 100 ms until `stop`; returns them
/// open (they are closed after the agent has logged them at its exit).
fn long_flows(a: Ipv4Addr, b: Ipv4Addr, stop: &AtomicBool) -> Result<LongFlows> {
    enter_netns(NAMES.ns_a)?;
    let mut streams = Vec::new();
    for i in 0..LONG_FLOWS {
        let local = SocketAddrV4::new(a, LONG_CLIENT_PORT_LO + i);
        let s = connect_from(
            local,
            SocketAddrV4::new(b, LONG_PORT),
            Duration::from_secs(5),
        )
        .with_context(|| format!("long flow from {local}"))?;
        streams.push(s);
    }
    let payload = [b'L'; 100];
    while !stop.load(Ordering::Relaxed) {
        for s in &mut streams {
            s.write_all(&payload).context("sending on a long flow")?;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((streams, LONG_FLOWS))
}

/// Client thread `t`: paced connections (its share of [`TARGET_RATE`]) over its tuples until
/// `length` or `stop`. Each: connect, 16 bytes, FIN, wait for the server's FIN, close.
fn short_client(
    t: usize,
    tuples: Tuples,
    a: Ipv4Addr,
    b: Ipv4Addr,
    length: Duration,
    stop: &AtomicBool,
) -> ClientTally {
    let mut tally = ClientTally::default();
    let interval = Duration::from_secs_f64(CLIENT_THREADS as f64 / TARGET_RATE);
    let t0 = Instant::now();
    let mut due = t0;
    let mut j = 0usize;
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < length {
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_secs(1) {
            // Behind by more than a second: the machine's limit, not a burst to make up.
            due = now;
        }
        due += interval;
        let Some((cp, sp)) = tuples.nth_of_thread(t, j) else {
            tally.out_of_tuples = true;
            break;
        };
        j += 1;
        let index = tuples
            .index(cp, sp)
            .expect("tuples of the thread are in range") as u32;
        let local = SocketAddrV4::new(a, cp);
        let remote = SocketAddrV4::new(b, sp);
        let mut s = match connect_from(local, remote, Duration::from_secs(3)) {
            Ok(s) => s,
            Err(e) => {
                tally.failed.push(index);
                if tally.failures.len() < 5 {
                    tally.failures.push(format!("{local} -> {remote}: {e}"));
                }
                continue;
            }
        };
        tally.made.push(index);
        let ok = s
            .write_all(b"soak 0123456789\n")
            .and_then(|()| s.shutdown(Shutdown::Write))
            .and_then(|()| read_to_eof(&mut s));
        if ok.is_err() {
            tally.errors_after_connect += 1;
        }
    }
    tally
}

/// The webhook receiver: in namespace a on loopback (where the agent POSTs from), one request
/// per connection, 500 to about one request in five (pseudo-random), 200 otherwise.
struct Receiver {
    port: u16,
    thread: JoinHandle<HookCounts>,
}

#[derive(Default)]
struct HookCounts {
    requests: u64,
    answered_500: u64,
    /// Delivery ids answered 200, with how many times.
    ok: HashMap<String, u32>,
    bad_requests: u64,
}

impl Receiver {
    fn start(stop: Arc<AtomicBool>) -> Result<Receiver> {
        let listener = in_netns(NAMES.ns_a, || {
            listen_on(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        })?;
        let port = listener.local_addr()?.port();
        let thread = std::thread::spawn(move || {
            let mut counts = HookCounts::default();
            let mut rng = Instant::now().elapsed().as_nanos() as u64 | 1;
            accept_loop(std::slice::from_ref(&listener), &stop, |s| {
                // xorshift64: enough to spread the failures.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let fail = rng.is_multiple_of(5);
                let c = &mut counts;
                match serve_hook(s, fail) {
                    Ok(Some(id)) => {
                        c.requests += 1;
                        if fail {
                            c.answered_500 += 1;
                        } else {
                            *c.ok.entry(id).or_default() += 1;
                        }
                    }
                    _ => c.bad_requests += 1,
                }
            });
            counts
        });
        Ok(Receiver { port, thread })
    }

    fn finish(self) -> HookCounts {
        self.thread.join().unwrap_or_default()
    }
}

/// Reads one POST (head, Content-Length body) and answers 500 or 200; returns its delivery id.
fn serve_hook(stream: TcpStream, fail: bool) -> std::io::Result<Option<String>> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("POST ") {
        return Ok(None);
    }
    let (mut len, mut id) = (0usize, None);
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "x-conntrack-delivery" => id = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let answer: &[u8] = if fail {
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    };
    let mut w = stream;
    w.write_all(answer)?;
    let _ = w.shutdown(Shutdown::Both);
    Ok(id)
}

/// `GET path` from inside `ns` to 127.0.0.1:port; the body.
fn http_get_in(ns: &'static str, port: u16, path: &'static str) -> Result<String> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or("no answer"));
        }
        Ok(body.to_string())
    })
}

/// A counter or gauge from the OpenMetrics text (`name` with its labels, as printed).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.starts_with(' ')
            .then(|| rest.split_whitespace().next()?.parse().ok())?
    })
}

/// The checks' results.
struct Verdict {
    failures: Vec<String>,
    files: usize,
    rotations: usize,
    records: u64,
    logged_short: u64,
    long_logged: u64,
    alerts: usize,
    spooled_left: usize,
    warm_end: Option<Sample>,
    end: Option<Sample>,
}

fn verdict(run: &Run, out: &Path) -> Result<Verdict> {
    let mut failures = Vec::new();
    if !run.exit.success() {
        failures.push(format!("the agent exited with {} after SIGINT", run.exit));
    }
    let log_dir = out.join("logs");
    let logs = read_conn_logs(&log_dir, run.tuples)?;
    failures.extend(logs.problems.iter().cloned());
    exactly_once(run, &logs, &mut failures);

    for name in [
        "conntrack_kernel_ringbuf_full_total",
        "conntrack_kernel_table_full_total",
    ] {
        match metric(&run.metrics, name) {
            Some(v) if v > 0.0 => {
                failures.push(format!("{name} is {v} (events lost in the kernel)"))
            }
            Some(_) => {}
            None => failures.push(format!("/metrics has no {name}")),
        }
    }
    for l in run.metrics.lines() {
        if l.starts_with("conntrack_log_records_dropped_total{")
            && let Some(v) = l
                .split_whitespace()
                .last()
                .and_then(|v| v.parse::<f64>().ok())
            && v > 0.0
        {
            failures.push(format!("log records dropped: {l}"));
        }
    }
    let (alerts, spooled_left) = check_alerts(run, &log_dir, &mut failures)?;
    let (warm_end, end) = leak_check(run, &mut failures);
    Ok(Verdict {
        failures,
        files: logs.files,
        rotations: logs.rotated,
        records: logs.records,
        logged_short: logs.short_records,
        long_logged: logs.long.values().map(|&c| u64::from(c)).sum(),
        alerts,
        spooled_left,
        warm_end,
        end,
    })
}

/// What the conn.log files hold.
struct ConnLogs {
    files: usize,
    rotated: usize,
    records: u64,
    /// Records per short-connection tuple index.
    short: Vec<u32>,
    short_records: u64,
    /// Records per long-flow client port.
    long: HashMap<u16, u32>,
    /// TCP records to b that are neither (unexpected ports).
    stray: Vec<String>,
    problems: Vec<String>,
}

/// Reads conn.log and every rotated `conn.*.log`: each record must have its file's field
/// count; each rotated file must end with `#close` (so must conn.log after a clean exit).
fn read_conn_logs(dir: &Path, tuples: Tuples) -> Result<ConnLogs> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the log directory {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("conn.") && n.ends_with(".log"))
        })
        .collect();
    paths.sort();
    let mut logs = ConnLogs {
        files: paths.len(),
        rotated: 0,
        records: 0,
        short: vec![0; tuples.len()],
        short_records: 0,
        long: HashMap::new(),
        stray: Vec::new(),
        problems: Vec::new(),
    };
    if paths.is_empty() {
        logs.problems
            .push(format!("no conn.log file in {}", dir.display()));
    }
    for p in &paths {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name != "conn.log" {
            logs.rotated += 1;
        }
        read_conn_log(p, &name, tuples, &mut logs)?;
    }
    if !logs.stray.is_empty() {
        logs.problems.push(format!(
            "{} TCP records to {} on ports the soak did not use, e.g. {}",
            logs.stray.len(),
            NAMES.addr_b,
            logs.stray[0]
        ));
    }
    Ok(logs)
}

fn read_conn_log(p: &Path, name: &str, tuples: Tuples, logs: &mut ConnLogs) -> Result<()> {
    let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut fields: Vec<String> = Vec::new();
    let col = |fields: &[String], n: &str| fields.iter().position(|f| f == n);
    let mut last = String::new();
    let mut split_lines = 0u64;
    for line in BufReader::new(f).lines() {
        let line = line.with_context(|| format!("reading {}", p.display()))?;
        if let Some(rest) = line.strip_prefix("#fields\t") {
            fields = rest.split('\t').map(str::to_string).collect();
        } else if !line.starts_with('#') {
            logs.records += 1;
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() != fields.len() {
                split_lines += 1;
                continue;
            }
            let get = |n: &str| col(&fields, n).map(|i| cols[i]);
            if get("proto") != Some("tcp") || get("id.resp_h") != Some(NAMES.addr_b) {
                continue;
            }
            let orig_p: u16 = get("id.orig_p").and_then(|v| v.parse().ok()).unwrap_or(0);
            let resp_p: u16 = get("id.resp_p").and_then(|v| v.parse().ok()).unwrap_or(0);
            if let Some(i) = tuples.index(orig_p, resp_p) {
                logs.short[i] += 1;
                logs.short_records += 1;
            } else if resp_p == LONG_PORT {
                *logs.long.entry(orig_p).or_default() += 1;
            } else {
                logs.stray.push(format!("{orig_p} -> {resp_p} in {name}"));
            }
        }
        last = line;
    }
    if split_lines > 0 {
        logs.problems.push(format!(
            "{name}: {split_lines} records without the {} fields of its header (split or cut lines)",
            fields.len()
        ));
    }
    if !last.starts_with("#close") {
        logs.problems.push(format!(
            "{name} does not end with #close (last line: {last:?})"
        ));
    }
    Ok(())
}

/// Every connection made logged exactly once, none that was not made; a failed connect may
/// have left one record (an attempt) or none.
fn exactly_once(run: &Run, logs: &ConnLogs, failures: &mut Vec<String>) {
    let (mut missing, mut doubled, mut unmade) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (&made, &count)) in run.made.iter().zip(&logs.short).enumerate() {
        let wrong = match made {
            MADE => count != 1,
            FAILED => count > 1,
            _ => count != 0,
        };
        if wrong {
            let (c, s) = run.tuples.ports(i);
            let entry = format!("{}:{c} -> {s} ({count}x)", NAMES.addr_a);
            match (made, count) {
                (MADE, 0) => missing.push(entry),
                (0, _) => unmade.push(entry),
                _ => doubled.push(entry),
            }
        }
    }
    for (what, list) in [
        ("made but not logged", &missing),
        ("logged more than once", &doubled),
        ("logged but never made", &unmade),
    ] {
        if !list.is_empty() {
            failures.push(format!(
                "{} short connections {what}, e.g. {}",
                list.len(),
                list.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for i in 0..LONG_FLOWS {
        let port = LONG_CLIENT_PORT_LO + i;
        let n = logs.long.get(&port).copied().unwrap_or(0);
        if i < run.long_made && n != 1 {
            failures.push(format!(
                "long flow from port {port} logged {n} times (want once)"
            ));
        }
    }
    if run.long_made != LONG_FLOWS {
        failures.push(format!(
            "only {} of {LONG_FLOWS} long flows opened",
            run.long_made
        ));
    }
    if run.out_of_tuples {
        failures.push(
            "a client thread used up its 4-tuples (the soak's tuple space is too small)".into(),
        );
    }
    if run.made_count == 0 {
        failures.push("no short connection was made".into());
    }
}

/// alerts.log against what the receiver answered 200 and what is left in the spool.
/// Returns (alerts, deliveries still spooled).
fn check_alerts(run: &Run, log_dir: &Path, failures: &mut Vec<String>) -> Result<(usize, usize)> {
    let path = log_dir.join("alerts.log");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut ids = Vec::new();
    let mut burst = HashSet::new();
    let mut long = HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}: not JSON: {line}", path.display()))?;
        let id = v["delivery_id"].as_str().unwrap_or_default().to_string();
        let orig_p = v["conn"]["id.orig_p"].as_u64().unwrap_or(0) as u16;
        let resp_p = v["conn"]["id.resp_p"].as_u64().unwrap_or(0) as u16;
        match v["rule"].as_str() {
            Some("soak-burst") => {
                burst.insert((orig_p, resp_p));
            }
            Some("soak-long") => {
                long.insert(orig_p);
            }
            other => failures.push(format!("alert of an unknown rule {other:?}")),
        }
        ids.push(id);
    }
    let spool_dir = log_dir.join("alerts-spool").join("soak");
    let spooled: HashSet<String> = std::fs::read_dir(&spool_dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    // `<created ns>-<seq>-<delivery id>.json`
                    let stem = n.strip_suffix(".json")?;
                    Some(stem.splitn(3, '-').nth(2)?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let lost: Vec<&String> = ids
        .iter()
        .filter(|id| !run.hook.ok.contains_key(*id) && !spooled.contains(*id))
        .collect();
    if !lost.is_empty() {
        failures.push(format!(
            "{} alerts in alerts.log neither answered 200 nor in the spool, e.g. {}",
            lost.len(),
            lost[0]
        ));
    }
    let dead = log_dir.join("alerts-spool").join("dead-letter.jsonl");
    if std::fs::metadata(&dead).is_ok_and(|m| m.len() > 0) {
        failures.push(format!(
            "deliveries went to the dead letter ({})",
            dead.display()
        ));
    }
    // Each short connection made from the alert ports sent at least SYN, ACK and its data:
    // the rule must have fired for every one of them, and for every long flow.
    let (lo, hi) = ALERT_CLIENT_PORTS;
    let want_burst: HashSet<(u16, u16)> = run
        .made
        .iter()
        .enumerate()
        .filter(|(_, m)| **m == MADE)
        .map(|(i, _)| run.tuples.ports(i))
        .filter(|(c, _)| (lo..=hi).contains(c))
        .collect();
    if want_burst != burst {
        failures.push(format!(
            "soak-burst alerts: {} for {} connections made from ports {lo}-{hi} ({} missing, {} extra)",
            burst.len(),
            want_burst.len(),
            want_burst.difference(&burst).count(),
            burst.difference(&want_burst).count()
        ));
    }
    if long.len() != usize::from(run.long_made) {
        failures.push(format!(
            "soak-long alerts for {} of {} long flows",
            long.len(),
            run.long_made
        ));
    }
    check_delivery_summary(run, ids.len(), spooled.len(), failures);
    Ok((ids.len(), spooled.len()))
}

/// The agent's own account at exit must agree: each alert sent or left in the spool, none
/// refused, and at least one retry per 500 the receiver gave (timeouts are retries too).
fn check_delivery_summary(run: &Run, alerts: usize, spooled: usize, failures: &mut Vec<String>) {
    let Some(line) = alert_summary(&run.agent_log) else {
        failures.push("the agent printed no alert summary at exit".into());
        return;
    };
    let n = |word: &str| count_before(line, word);
    let (made, sent, retries, failed) = (n("alerts;"), n("sent,"), n("retries,"), n("failed"));
    if made != Some(alerts as u64) {
        failures.push(format!(
            "the agent counts {made:?} alerts, alerts.log has {alerts}"
        ));
    }
    if sent.map(|s| s + spooled as u64) != Some(alerts as u64) {
        failures.push(format!(
            "the agent sent {sent:?} deliveries and left {spooled} in the spool for {alerts} alerts"
        ));
    }
    if failed != Some(0) {
        failures.push(format!("the agent counts {failed:?} failed deliveries"));
    }
    if retries.is_none_or(|r| r < run.hook.answered_500) {
        failures.push(format!(
            "the agent counts {retries:?} retries for {} answers 500",
            run.hook.answered_500
        ));
    }
}

/// The agent's alert line at exit (`N alerts; webhook deliveries: N sent, ...`).
fn alert_summary(agent_log: &str) -> Option<&str> {
    agent_log
        .lines()
        .rfind(|l| l.contains("webhook deliveries:"))
}

/// The number just before `word` in `line` ("644 sent," -> 644).
fn count_before(line: &str, word: &str) -> Option<u64> {
    let mut prev: Option<&str> = None;
    for w in line.split_whitespace() {
        if w == word {
            return prev?.parse().ok();
        }
        prev = Some(w);
    }
    None
}

/// The leak rule. A leak grows with time or with connections, so it shows as a steady climb
/// from the end of the warm-up to the end of the run; noise is a bounded wobble around a level
/// (allocator pages kept or returned, a table doubling once, buffers of a rotation in flight).
/// The warm-up (20 % of the run, at least 10 s) covers the agent reaching its steady state:
/// tables sized for the connections in their 5 s close timer, the ring buffer's pages all
/// touched, the first rotations. Baseline: the median of the first three samples after it;
/// end: the median of the last three (a median of three ignores one spike either way).
/// Fails when the end is above the baseline by more than 5 fds (a few sockets or log files
/// in flight; a leaked fd per rotation or per delivery gives dozens), or by more than 25 % of
/// RSS or 16 MiB, whichever is larger (one doubling of the flow table at this load is
/// several MiB; a leak of even 64 B per connection is about 19 MiB a minute at 5,000/s).
fn leak_check(run: &Run, failures: &mut Vec<String>) -> (Option<Sample>, Option<Sample>) {
    let after: Vec<Sample> = run
        .samples
        .iter()
        .copied()
        .filter(|s| s.at >= run.warmup)
        .collect();
    if after.len() < 6 {
        failures.push(format!(
            "only {} samples after the warm-up: too few to judge RSS and fds",
            after.len()
        ));
        return (after.first().copied(), after.last().copied());
    }
    let median3 = |w: &[Sample]| {
        let mut rss: Vec<u64> = w.iter().map(|s| s.rss_kib).collect();
        let mut fds: Vec<u64> = w.iter().map(|s| s.fds).collect();
        rss.sort_unstable();
        fds.sort_unstable();
        Sample {
            at: w[w.len() - 1].at,
            rss_kib: rss[1],
            fds: fds[1],
        }
    };
    let base = median3(&after[..3]);
    let end = median3(&after[after.len() - 3..]);
    let rss_margin = (base.rss_kib / 4).max(16 * 1024);
    if end.rss_kib > base.rss_kib + rss_margin {
        failures.push(format!(
            "agent RSS grew from {} to {} MiB after the warm-up (allowed +{} MiB)",
            base.rss_kib / 1024,
            end.rss_kib / 1024,
            rss_margin / 1024
        ));
    }
    if end.fds > base.fds + 5 {
        failures.push(format!(
            "agent open fds grew from {} to {} after the warm-up (allowed +5)",
            base.fds, end.fds
        ));
    }
    (Some(base), Some(end))
}

fn print_report(run: &Run, v: &Verdict, out: &Path) {
    let made = run.made_count;
    let rate = made as f64 / run.traffic_secs.max(1e-3);
    let sample = |s: Option<Sample>| {
        s.map_or("-".to_string(), |s| {
            format!(
                "RSS {:.1} MiB, {} fds (at {:.0} s)",
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.at.as_secs_f64()
            )
        })
    };
    let summary = alert_summary(&run.agent_log).unwrap_or("(no alert summary in the agent's log)");
    let m = |outcome: &str| {
        metric(
            &run.metrics,
            &format!("conntrack_alerts_total{{outcome=\"{outcome}\"}}"),
        )
        .unwrap_or(0.0)
    };
    println!("soak report ({})", out.display());
    println!(
        "  duration          {:.0} s of traffic (asked {:.0} s); agent stopped by SIGINT in {:.1} s, {}",
        run.traffic_secs,
        run.length.as_secs_f64(),
        run.stop_took.as_secs_f64(),
        run.exit
    );
    println!(
        "  connections       {made} short made ({rate:.0}/s; asked {TARGET_RATE:.0}/s), {} failed to connect, {} errors after connect; {} long flows",
        run.connect_failed_count, run.errors_after_connect, run.long_made
    );
    for f in &run.connect_failures {
        println!("    connect failed: {f}");
    }
    println!(
        "  logged            {} short, {} long, {} records in all, in {} files ({} rotations)",
        v.logged_short, v.long_logged, v.records, v.files, v.rotations
    );
    println!(
        "  alerts            {} in alerts.log; receiver: {} requests, {} answered 500 (retried by the agent), {} distinct ids answered 200; {} still spooled",
        v.alerts,
        run.hook.requests,
        run.hook.answered_500,
        run.hook.ok.len(),
        v.spooled_left
    );
    println!(
        "  agent metrics     alerts sent {} retried {} failed {} queue_full {} (before SIGINT)",
        m("sent"),
        m("retried"),
        m("failed"),
        m("queue_full")
    );
    println!("  agent summary     {}", summary.trim());
    println!(
        "  memory            after the warm-up ({:.0} s): {}; at the end: {} (samples.tsv)",
        run.warmup.as_secs_f64(),
        sample(v.warm_end),
        sample(v.end)
    );
    if v.failures.is_empty() {
        println!("  PASS");
    } else {
        println!("  FAIL");
        for f in &v.failures {
            println!("    - {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_of_the_threads_are_distinct_and_in_range() {
        let t = Tuples { server_ports: 8 };
        let mut seen = vec![false; t.len()];
        for c in 0..CLIENT_THREADS {
            let mut j = 0;
            while let Some((cp, sp)) = t.nth_of_thread(c, j) {
                let i = t.index(cp, sp).expect("in range");
                assert!(!seen[i], "tuple {cp} -> {sp} twice");
                assert_eq!(t.ports(i), (cp, sp));
                seen[i] = true;
                j += 1;
            }
        }
        assert!(seen.iter().all(|s| *s), "every tuple used once");
    }

    #[test]
    fn summary_counts_are_read() {
        let line = "conntrack-agent: 644 alerts; webhook deliveries: 644 sent, 163 retries, 0 failed (dead letter), 0 replayed from the spool (log x); no delivery pending";
        assert_eq!(count_before(line, "alerts;"), Some(644));
        assert_eq!(count_before(line, "retries,"), Some(163));
        assert_eq!(count_before(line, "failed"), Some(0));
        assert_eq!(count_before(line, "nothing"), None);
    }

    #[test]
    fn metric_lines_are_read() {
        let text = "# TYPE x counter\nconntrack_kernel_ringbuf_full_total 0\nconntrack_alerts_total{outcome=\"sent\"} 12\n";
        assert_eq!(
            metric(text, "conntrack_kernel_ringbuf_full_total"),
            Some(0.0)
        );
        assert_eq!(
            metric(text, "conntrack_alerts_total{outcome=\"sent\"}"),
            Some(12.0)
        );
        assert_eq!(metric(text, "conntrack_kernel_table_full_total"), None);
    }
}
