//! Shared harness for conntrack's integration tests: finding the built agent, reading conn.log,
//! network namespaces that clean up after themselves, and a pcap writer for generated traces.

pub mod connlog;
pub mod netns;
pub mod pcapgen;
pub mod user_tunnel;

use std::path::PathBuf;

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// The release agent binary that `cargo xtask build` produces (or `$CONNTRACK_AGENT`).
pub fn agent_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CONNTRACK_AGENT") {
        return PathBuf::from(p);
    }
    let p = repo_root().join("target/release/conntrack-agent");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo xtask build` (or run `cargo xtask test`)",
        p.display()
    );
    p
}

/// `../shared/conformance` next to the repository, or `$CONNTRACK_CONFORMANCE`.
pub fn conformance_dir() -> Option<PathBuf> {
    let p = std::env::var_os("CONNTRACK_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/conformance"));
    p.join("traces").is_dir().then_some(p)
}

/// True when running as root (live tests need CAP_BPF / CAP_NET_ADMIN).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `dir/conn.log`'s data lines with the uid column removed, sorted: uids are random, and
/// removal order may differ only where timers fire at the same instant. The uids in
/// `tunnel_parents` are replaced by what they name: the 5-tuple of the conn.log record or
/// tunnel.log entry with that uid (sorted).
pub fn records_without_uid(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("conn.log")).unwrap();
    let tunnels = std::fs::read_to_string(dir.join("tunnel.log")).unwrap_or_default();
    let parents_col = text
        .lines()
        .find_map(|l| l.strip_prefix("#fields\t"))
        .and_then(|f| f.split('\t').position(|c| c == "tunnel_parents"));
    let data = |t: &str| -> Vec<Vec<String>> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    };
    let rows = data(&text);
    let mut named = std::collections::HashMap::new();
    for r in rows.iter().chain(data(&tunnels).iter()) {
        if r.len() > 6 {
            named.insert(r[1].clone(), r[2..7].join("/"));
        }
    }
    let mut lines: Vec<String> = rows
        .into_iter()
        .map(|mut cols| {
            if let Some(c) = parents_col
                && let Some(p) = cols.get_mut(c)
                && p != "-"
            {
                let mut names: Vec<String> = p
                    .split(',')
                    .map(|u| named.get(u).cloned().unwrap_or_else(|| "?".into()))
                    .collect();
                names.sort();
                *p = names.join(",");
            }
            cols.remove(1);
            cols.join("\t")
        })
        .collect();
    lines.sort();
    lines
}

/// `dir/tunnel.log`'s data lines with the uid column removed, sorted (empty without one).
pub fn tunnels_without_uid(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("tunnel.log")).unwrap_or_default();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut cols: Vec<&str> = l.split('\t').collect();
            cols.remove(1);
            cols.join("\t")
        })
        .collect();
    lines.sort();
    lines
}

/// The `read` options that a conformance case's `replay` settings stand for (checksum policy,
/// likely server ports), as `conformance.py` passes them.
pub fn case_replay_args(replay: &serde_json::Value) -> Vec<String> {
    let mut args = Vec::new();
    if replay["ignore_checksums"].as_bool() == Some(true) {
        args.push("--ignore-checksums".to_string());
    }
    for net in replay["ignore_checksums_nets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
    {
        args.push("--ignore-checksums-net".to_string());
        args.push(net.to_string());
    }
    let ports: Vec<&str> = replay["likely_server_ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str())
        .collect();
    args.push(format!("--likely-server-ports={}", ports.join(",")));
    args
}
