//! `cargo xtask container [--check]`: the container image, and a check that it tracks traffic.
//!
//! The image is `deploy/Containerfile` over a root filesystem staged here: the release agent
//! (the eBPF object is inside it), the shared libraries `ldd` reports for it, and the host's CA
//! bundle. Building from `scratch` needs no registry, so it works on machines without one.
//!
//! `--check` runs the image as the DaemonSet example describes it (its arguments, privileges,
//! host networking, log and config mounts, the ConfigMap's config file) against a veth whose peer sits in a network namespace made for the check, sends
//! pings and one TCP transfer of known size, stops the container with SIGTERM and reads the
//! conn.log it left: both connections must be there with the counts that were sent.

use crate::agent::{self, Profile};
use crate::deploy_check::{Bpffs, HOST_IF, TestLink, check_metrics, conn_logs, verify_conn_logs};
use crate::util::{self, step};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "localhost/conntrack-agent";
pub fn container(args: &[String]) -> Result<()> {
    let mut check = false;
    for a in args {
        match a.as_str() {
            "--check" => check = true,
            other => bail!("container: unknown option `{other}` (expected --check)"),
        }
    }
    let engine = engine()?;
    agent::build(Profile::Release)?;
    let tag = build_image(&engine)?;
    if check {
        check_image(&engine, &tag)?;
    }
    Ok(())
}

/// podman, else docker (CONTAINER_ENGINE overrides).
fn engine() -> Result<String> {
    if let Ok(e) = std::env::var("CONTAINER_ENGINE") {
        return Ok(e);
    }
    for e in ["podman", "docker"] {
        if Command::new(e)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(e.to_string());
        }
    }
    bail!("neither podman nor docker found: install podman (`apt-get install podman`)")
}

fn build_image(engine: &str) -> Result<String> {
    let ctx = util::root().join("target/container");
    let rootfs = ctx.join("rootfs");
    if ctx.exists() {
        std::fs::remove_dir_all(&ctx).with_context(|| format!("cannot clear {}", ctx.display()))?;
    }
    step(&format!(
        "staging the image's root filesystem in {}",
        rootfs.display()
    ));
    let bin = agent::binary(Profile::Release);
    let image_bin = Path::new("usr/local/bin/conntrack-agent");
    copy_into(&rootfs, &bin, image_bin)?;
    // The release profile keeps debug info for profiling; the image does not need it.
    util::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg(rootfs.join(image_bin)),
    )
    .context("cannot strip the agent binary (binutils)")?;
    for lib in shared_libraries(&bin)? {
        let rel = lib.strip_prefix("/").unwrap_or(&lib).to_path_buf();
        copy_into(&rootfs, &lib, &rel)?;
    }
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.is_file() {
        copy_into(&rootfs, ca, Path::new("etc/ssl/certs/ca-certificates.crt"))?;
    }
    for dir in ["tmp", "var/log/conntrack", "sys/fs/bpf"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    std::fs::copy(
        util::root().join("deploy/Containerfile"),
        ctx.join("Containerfile"),
    )
    .context("cannot copy deploy/Containerfile")?;
    let tag = format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION"));
    step(&format!("{engine} build -t {tag}"));
    util::run(
        Command::new(engine)
            .args(["build", "-q", "-t", &tag, "-t", &format!("{IMAGE}:latest")])
            .arg("-f")
            .arg(ctx.join("Containerfile"))
            .arg(&ctx),
    )?;
    step(&format!("built image {tag}"));
    Ok(tag)
}

/// Copies `src` to `root/rel`, resolving symlinks (the image needs the files themselves).
fn copy_into(root: &Path, src: &Path, rel: &Path) -> Result<()> {
    let dst = root.join(rel);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(src, &dst)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    Ok(())
}

/// The absolute paths `ldd` prints for `bin` (libraries and the dynamic loader).
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = util::stdout(Command::new("ldd").arg(bin))?;
    Ok(parse_ldd(&out))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2
/// (0x...)` give paths; `linux-vdso.so.1 (0x...)` is in the kernel and gives none.
fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Removes the check's container, also when the check fails half way.
struct Cleanup {
    engine: String,
    container: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(&self.engine)
            .args(["rm", "-f", "-t", "0", &self.container])
            .output();
    }
}

fn check_image(engine: &str, tag: &str) -> Result<()> {
    step("container check: the DaemonSet's pod on a veth to a test namespace, through a rollout");
    let spec = DaemonSet::load(&util::root().join(DAEMONSET))?;
    ensure!(
        spec.image == tag,
        "{DAEMONSET} runs image {} but this build is {tag}: update the manifest",
        spec.image
    );
    let work = util::root().join("target/container-check");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    let (logs, config) = (work.join("logs"), work.join("config"));
    std::fs::create_dir_all(&logs)?;
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("conntrack.toml"), &spec.config)?;
    // The node's /sys/fs/bpf: a private BPF filesystem, so that no pin outlives the check.
    let bpffs = Bpffs::mount(&work.join("bpffs"))?;
    let mut link = TestLink::create()?;
    let flags = run_flags(engine, tag)?;
    let pod = |name: &str| -> Result<Cleanup> {
        let mut run = Command::new(engine);
        run.args(&flags)
            .args(["run", "-d", "--name", name])
            .args(ulimits());
        if spec.privileged {
            run.arg("--privileged");
        }
        if spec.host_network {
            run.arg("--network=host");
        }
        for (host, mount) in [
            (format!("{}", logs.display()), spec.log_mount.clone()),
            (
                format!("{}", config.display()),
                format!("{}:ro", spec.config_mount),
            ),
            (
                format!("{}", bpffs.path().display()),
                spec.bpffs_mount.clone(),
            ),
        ] {
            run.arg("-v").arg(format!("{host}:{mount}"));
        }
        run.arg(tag).args(spec.args_on(HOST_IF));
        util::run(run.stdout(Stdio::null()))?;
        let pod = Cleanup {
            engine: engine.to_string(),
            container: name.to_string(),
        };
        wait_for_log_line(engine, name, "tracking on", Duration::from_secs(30))?;
        Ok(pod)
    };
    let id = std::process::id();
    let old = pod(&format!("ctcont-{id}-old"))?;
    link.exercise()?;
    if let Some(port) = spec.metrics_port {
        check_metrics(port)?;
    }
    // A rollout: the old pod gets SIGTERM (with --pin-dir, a handover), then the new pod starts
    // on the same node's pins and logs.
    stop(engine, &old.container, "TERM")?;
    drop(old);
    let new = pod(&format!("ctcont-{id}-new"))?;
    // Deleting the DaemonSet for good: SIGINT logs every open connection.
    stop(engine, &new.container, "INT")?;
    let texts = conn_logs(&logs)?;
    verify_conn_logs(&texts).with_context(|| {
        format!(
            "conn.log files in {} across a rollout; the new pod's output:\n{}",
            logs.display(),
            container_output(engine, &new.container)
        )
    })?;
    drop(new);
    drop(link);
    drop(bpffs);
    step("container check passed: each connection logged once, with its counts, across a rollout");
    Ok(())
}

/// Sends SIGname to the container's agent and waits for it to exit 0.
fn stop(engine: &str, container: &str, signal: &str) -> Result<()> {
    util::output(Command::new(engine).args(["kill", "--signal", signal, container]))?;
    let code = util::stdout(Command::new(engine).args(["wait", container]))?;
    ensure!(
        code.trim() == "0",
        "the agent in {container} exited with {} after SIG{signal}:\n{}",
        code.trim(),
        container_output(engine, container)
    );
    Ok(())
}

fn container_output(engine: &str, container: &str) -> String {
    Command::new(engine)
        .args(["logs", container])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
        })
        .unwrap_or_default()
}

/// The DaemonSet example the check runs the image as.
const DAEMONSET: &str = "deploy/kubernetes/daemonset.yaml";

/// What the check takes from the DaemonSet manifest: the container's image, arguments,
/// privileges and mounts, and the config file its ConfigMap holds.
#[derive(Debug)]
struct DaemonSet {
    image: String,
    args: Vec<String>,
    privileged: bool,
    host_network: bool,
    log_mount: String,
    config_mount: String,
    bpffs_mount: String,
    config: String,
    metrics_port: Option<u16>,
}

impl DaemonSet {
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }

    fn parse(text: &str) -> Result<Self> {
        use yaml_rust2::{Yaml, YamlLoader};
        let docs = YamlLoader::load_from_str(text).context("not valid YAML")?;
        let kind = |k: &str| docs.iter().find(|d| d["kind"].as_str() == Some(k));
        let ds = kind("DaemonSet").context("no DaemonSet document")?;
        let cm = kind("ConfigMap").context("no ConfigMap document")?;
        let pod = &ds["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let strs = |y: &Yaml| -> Vec<String> {
            y.as_vec()
                .map(|v| {
                    v.iter()
                        .filter_map(|a| a.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mount = |volume: &str| -> Result<String> {
            c["volumeMounts"]
                .as_vec()
                .and_then(|v| v.iter().find(|m| m["name"].as_str() == Some(volume)))
                .and_then(|m| m["mountPath"].as_str())
                .map(String::from)
                .with_context(|| format!("the container mounts no volume `{volume}`"))
        };
        let metrics_port = c["ports"].as_vec().and_then(|v| {
            v.iter()
                .find(|p| p["name"].as_str() == Some("metrics"))
                .and_then(|p| p["containerPort"].as_i64())
                .and_then(|p| u16::try_from(p).ok())
        });
        Ok(DaemonSet {
            image: c["image"]
                .as_str()
                .context("container has no image")?
                .to_string(),
            args: strs(&c["args"]),
            privileged: c["securityContext"]["privileged"].as_bool() == Some(true),
            host_network: pod["hostNetwork"].as_bool() == Some(true),
            log_mount: mount("logs")?,
            config_mount: mount("config")?,
            bpffs_mount: mount("bpffs")?,
            config: cm["data"]["conntrack.toml"]
                .as_str()
                .context("the ConfigMap has no conntrack.toml")?
                .to_string(),
            metrics_port,
        })
    }

    /// The container's arguments with the interface replaced by `iface`.
    fn args_on(&self, iface: &str) -> Vec<String> {
        let mut out = self.args.clone();
        if let Some(i) = out.iter().position(|a| a == "--iface" || a == "-i")
            && let Some(v) = out.get_mut(i + 1)
        {
            *v = iface.to_string();
        }
        out
    }
}

/// Global engine flags that let a container start here: the default runtime, else runc.
/// (crun refuses hosts with cgroup controllers on both hierarchies, "hybrid mode", where runc
/// works.)
fn run_flags(engine: &str, tag: &str) -> Result<Vec<String>> {
    let mut errors = String::new();
    for flags in [vec![], vec!["--runtime".to_string(), "runc".to_string()]] {
        let out = Command::new(engine)
            .args(&flags)
            .args(["run", "--rm"])
            .args(ulimits())
            .args([tag, "--version"])
            .output()?;
        if out.status.success() {
            if !flags.is_empty() {
                step(&format!(
                    "the default runtime failed here; using {}",
                    flags.join(" ")
                ));
            }
            return Ok(flags);
        }
        errors.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    bail!("the image does not start with {engine}'s default runtime nor with runc:\n{errors}")
}

/// Resource limits for the container no higher than this process's own: engines default to
/// raising them, which fails where the host refuses (no CAP_SYS_RESOURCE). The agent needs few
/// processes and the host's open-files limit.
fn ulimits() -> Vec<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let nofile = limit(&limits, "Max open files").unwrap_or((1024, 4096));
    let nproc = limit(&limits, "Max processes").map_or(1024, |(soft, _)| soft.min(1024));
    vec![
        format!("--ulimit=nofile={}:{}", nofile.0, nofile.1),
        format!("--ulimit=nproc={nproc}:{nproc}"),
    ]
}

/// Soft and hard value of one `/proc/self/limits` row; None for "unlimited" or a missing row.
fn limit(table: &str, name: &str) -> Option<(u64, u64)> {
    let rest = table.lines().find_map(|l| l.strip_prefix(name))?;
    let mut cols = rest.split_whitespace();
    Some((cols.next()?.parse().ok()?, cols.next()?.parse().ok()?))
}

fn wait_for_log_line(engine: &str, container: &str, needle: &str, limit: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let out = Command::new(engine).args(["logs", container]).output()?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if text.contains(needle) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("the container did not start tracking within {limit:?}; its output:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemonset_example_parses() {
        let ds = DaemonSet::load(&util::root().join(DAEMONSET)).unwrap();
        assert!(ds.privileged && ds.host_network);
        assert_eq!(ds.image, format!("{IMAGE}:{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(ds.args.first().map(String::as_str), Some("run"));
        let args = ds.args_on("veth9");
        let i = args.iter().position(|a| a == "--iface").unwrap();
        assert_eq!(args[i + 1], "veth9");
        assert!(args.contains(&ds.log_mount));
        assert!(ds.config.contains("metrics-addr"));
        assert_eq!(ds.bpffs_mount, "/sys/fs/bpf");
        assert!(args.iter().any(|a| a == "--pin-dir"));
        assert_eq!(ds.metrics_port, Some(9750));
    }

    #[test]
    fn proc_limits_rows() {
        let table = "Limit                     Soft Limit           Hard Limit           Units\n\
                     Max processes             96365                96365                processes\n\
                     Max open files            1024                 20000                files\n\
                     Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(limit(table, "Max open files"), Some((1024, 20000)));
        assert_eq!(limit(table, "Max processes"), Some((96365, 96365)));
        assert_eq!(limit(table, "Max locked memory"), None);
        assert_eq!(limit(table, "Max nice priority"), None);
    }

    #[test]
    fn ldd_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
    }
}
