//! Zeek's `scripts.base.protocols.conn.contents-default-extract`: the IPv6 FTP trace with
//! extraction limited to port 21 (the test's `tcp port 21` filter) gives byte for byte the two
//! baseline files. Host engine always, kernel engine when root. The trace and the expected
//! files are read from ../shared/conformance (or `CONNTRACK_CONFORMANCE`) and never copied here;
//! the test skips when they are absent.

use crate::cli::Engine;
use crate::commands::read::read_with;
use crate::tests::fixtures::{config_of, replay_args};
use std::path::PathBuf;

const ORIG: &str =
    "contents_[2001-470-1f11-81f-c999-d94-aa7c-2e3e]-49185-[2001-470-4867-99--21]-21_orig.dat";
const RESP: &str =
    "contents_[2001-470-1f11-81f-c999-d94-aa7c-2e3e]-49185-[2001-470-4867-99--21]-21_resp.dat";

fn conformance() -> Option<PathBuf> {
    let dir = std::env::var_os("CONNTRACK_CONFORMANCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
        });
    if dir.join("traces/ftp__ipv6.pcap").is_file() && dir.join("expected-contents").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} has no ftp__ipv6.pcap / expected-contents",
            dir.display()
        );
        None
    }
}

fn engines() -> Vec<Engine> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        vec![Engine::Host, Engine::Kernel]
    } else {
        eprintln!("kernel engine skipped: needs root");
        vec![Engine::Host]
    }
}

/// Replays `trace` with a config file `config`; returns the extract directory.
pub fn replay(
    trace: &std::path::Path,
    engine: Engine,
    config: &str,
    dir: &tempfile::TempDir,
) -> PathBuf {
    let cfg = dir.path().join("conntrack.toml");
    std::fs::write(&cfg, config).unwrap();
    let logs = dir.path().join("logs");
    let cfg = cfg.display().to_string();
    let args = replay_args(trace, engine, &logs, &["--config", &cfg]);
    let config = config_of(&args);
    read_with(args, config, Vec::new()).unwrap_or_else(|e| panic!("{engine:?}: {e:#}"));
    dir.path().join("logs/extract")
}

#[test]
fn contents_default_extract_of_the_ftp_control_channel_equals_zeeks_files() {
    let Some(conf) = conformance() else { return };
    let trace = conf.join("traces/ftp__ipv6.pcap");
    let rule = "[[contents.rules]]\nmatch = { proto = \"tcp\", ports = [21] }\n";
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let out = replay(&trace, engine, rule, &dir);
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![ORIG.to_string(), RESP.to_string()],
            "{engine:?}"
        );
        for (got, want) in [(ORIG, "ftp__ipv6_orig.dat"), (RESP, "ftp__ipv6_resp.dat")] {
            let got = std::fs::read(out.join(got)).unwrap();
            let want = std::fs::read(conf.join("expected-contents").join(want)).unwrap();
            assert!(
                got == want,
                "{engine:?}: {}\n---\n{}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }
    }
}
