//! Live content extraction: the agent runs in a network namespace with `--extract-all` while the
//! test sends a few MB each way over real TCP; the extracted files must equal the bytes each
//! side sent. Needs root; skipped otherwise. Subnet 91 (unused by the other live tests).

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use conntrack_tests::is_root;
use conntrack_tests::netns::NetnsPair;

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    // Not periodic in any small unit, so a shifted or repeated block cannot pass as equal.
    let mut x: u32 = 0x1234_5678 ^ u32::from(salt);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn live_tcp_transfer_is_extracted_byte_for_byte_in_both_directions() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::new(91).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let extract = dir.path().join("extract");
    let agent = pair
        .start_agent(
            dir.path(),
            &["--extract-all", "--extract-dir", extract.to_str().unwrap()],
        )
        .expect("starting the agent");

    let up = pattern(4_000_000, 1);
    let down = pattern(2_000_000, 2);
    let srv = SocketAddr::new(pair.b_v4.parse::<IpAddr>().unwrap(), 5091);
    let down_s = down.clone();
    let server = NetnsPair::run_in(&pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&down_s).unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    let up_c = up.clone();
    let client = NetnsPair::run_in(&pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        // The agent turns extraction on when it handles the establishment (it polls every
        // 20 ms); bytes sent before that are not extracted (the file would start with a gap).
        std::thread::sleep(Duration::from_millis(500));
        c.write_all(&up_c).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        back
    });
    assert!(client.join().unwrap() == down, "the transfer itself failed");
    assert!(server.join().unwrap() == up, "the transfer itself failed");
    std::thread::sleep(Duration::from_millis(500));
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
    drop(pair);

    let files: Vec<_> = std::fs::read_dir(&extract)
        .expect("the extract directory exists")
        .map(|e| e.unwrap().path())
        .collect();
    let find = |suffix: &str| {
        let f: Vec<_> = files
            .iter()
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("contents_10.91.0.1-")
                    && n.ends_with(&format!("-10.91.0.2-5091_{suffix}.dat"))
            })
            .collect();
        assert_eq!(f.len(), 1, "one {suffix} file in {files:?}");
        std::fs::read(f[0]).unwrap()
    };
    let orig = find("orig");
    let resp = find("resp");
    assert_eq!(orig.len(), up.len(), "client bytes extracted");
    assert!(orig == up, "the client's bytes differ");
    assert_eq!(resp.len(), down.len(), "server bytes extracted");
    assert!(resp == down, "the server's bytes differ");
}
