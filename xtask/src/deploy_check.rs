//! What the deployment checks share (`cargo xtask container --check`, `cargo xtask systemd
//! --check`): a veth whose host end the deployed agent watches and whose peer sits in a network
//! namespace made for the check, known traffic across it, and the checks of what the agent
//! logged and serves.

use crate::util;
use anyhow::{Context, Result, ensure};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The check's namespace and veth names, and its subnet (10.98.1.0/24).
pub const NS: &str = "ctcont-peer";
pub const HOST_IF: &str = "ctcont-h";
const PEER_IF: &str = "ctcont-p";
pub const HOST_IP: &str = "10.98.1.1";
pub const PEER_IP: &str = "10.98.1.2";
const TCP_PORT: u16 = 5701;
/// Bytes the client sends and the server answers with in the check's transfer.
const SENT: usize = 200_000;
const ANSWER: usize = 3_000;
const PINGS: u32 = 3;

/// The check's veth pair and namespace; removed on drop, also when the check fails.
pub struct TestLink {
    server: Option<Child>,
}

impl TestLink {
    pub fn create() -> Result<Self> {
        let link = TestLink { server: None };
        link.remove();
        ip(&["netns", "add", NS])?;
        ip(&[
            "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF, "netns", NS,
        ])?;
        ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", HOST_IF])?;
        ip(&["link", "set", HOST_IF, "up"])?;
        ip(&[
            "-n",
            NS,
            "addr",
            "add",
            &format!("{PEER_IP}/24"),
            "dev",
            PEER_IF,
        ])?;
        ip(&["-n", NS, "link", "set", PEER_IF, "up"])?;
        ip(&["-n", NS, "link", "set", "lo", "up"])?;
        Ok(link)
    }

    fn remove(&self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
        let _ = Command::new("ip").args(["link", "del", HOST_IF]).output();
    }

    /// PINGS pings, then one TCP transfer (SENT bytes out, ANSWER back) to a server in the
    /// namespace; both ends check the byte counts.
    pub fn exercise(&mut self) -> Result<()> {
        // A server in the namespace that reads everything, then answers ANSWER bytes.
        let server_code = format!(
            "import socket\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{PEER_IP}',{TCP_PORT})); s.listen(1); print('ready', flush=True)\n\
             c,_=s.accept(); n=0\n\
             while True:\n    d=c.recv(65536)\n    if not d: break\n    n+=len(d)\n\
             c.sendall(b'y'*{ANSWER}); c.close(); print(n, flush=True)\n"
        );
        let mut server = Command::new("ip")
            .args(["netns", "exec", NS, "python3", "-c", &server_code])
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the check's TCP server (python3)")?;
        let mut out = BufReader::new(server.stdout.take().context("server stdout")?);
        self.server = Some(server);
        let ready = read_line(&mut out)?;
        ensure!(
            ready == "ready",
            "the check's TCP server did not start: {ready:?}"
        );
        util::output(Command::new("ping").args([
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            PEER_IP,
        ]))
        .context("ping into the check namespace failed")?;
        let received = transfer()?;
        let got = read_line(&mut out)?;
        ensure!(
            got == SENT.to_string(),
            "the server got {got} bytes, {SENT} sent"
        );
        ensure!(
            received == ANSWER,
            "got {received} bytes back, {ANSWER} expected"
        );
        Ok(())
    }
}

impl Drop for TestLink {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        self.remove();
    }
}

fn read_line(r: &mut BufReader<ChildStdout>) -> Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line.trim().to_string())
}

fn ip(args: &[&str]) -> Result<()> {
    util::output(Command::new("ip").args(args)).map(|_| ())
}

/// Sends SENT bytes to the server, half-closes, and reads the answer to the end.
fn transfer() -> Result<usize> {
    use std::io::Read;
    let addr = format!("{PEER_IP}:{TCP_PORT}");
    let mut s = TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to the check server at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&vec![b'x'; SENT])?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back.len())
}

/// Scrapes the agent's Prometheus endpoint on the host network: it must answer with the
/// tracker's counters.
pub fn check_metrics(port: u16) -> Result<()> {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )
    .with_context(|| format!("no metrics endpoint on 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    ensure!(
        body.starts_with("HTTP/1.1 200") && body.contains("conntrack_connections_created"),
        "unexpected answer from the metrics endpoint:\n{body}"
    );
    Ok(())
}

/// The check's BPF filesystem, standing in for /sys/fs/bpf (not mounted on every machine, and
/// pins of a check must not outlive it); unmounted on drop.
pub struct Bpffs(PathBuf);

impl Bpffs {
    pub fn mount(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        util::output(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(path))
            .context("cannot mount a BPF filesystem for the check")?;
        Ok(Bpffs(path.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// conn.log and the files a takeover or a rotation set aside (`conn.<time>.log`).
pub fn conn_logs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("conn.") && name.ends_with(".log") {
            out.push(std::fs::read_to_string(dir.join(&name))?);
        }
    }
    Ok(out)
}

/// The records of a TSV conn.log as field-name -> value maps.
fn records(text: &str) -> Result<Vec<std::collections::HashMap<String, String>>> {
    let fields: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("#fields\t"))
        .context("conn.log has no #fields line")?
        .split('\t')
        .collect();
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            fields
                .iter()
                .zip(l.split('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect())
}

/// Several conn.log files of one run (rotated or set aside at a restart): each closed with
/// `#close`, and together holding each of the check's connections exactly once, with the
/// counts sent.
pub fn verify_conn_logs(texts: &[String]) -> Result<()> {
    ensure!(!texts.is_empty(), "no conn.log was written");
    let mut recs = Vec::new();
    for text in texts {
        ensure!(
            text.lines().any(|l| l.starts_with("#close\t")),
            "a conn.log has no #close line: the agent did not drain on its stop signal"
        );
        recs.extend(records(text)?);
    }
    let all = texts.concat();
    let find = |proto: &str| {
        let found: Vec<_> = recs
            .iter()
            .filter(|r| {
                r["proto"] == proto && r["id.orig_h"] == HOST_IP && r["id.resp_h"] == PEER_IP
            })
            .collect();
        ensure!(
            found.len() == 1,
            "{} {proto} records {HOST_IP} -> {PEER_IP}, one expected:\n{all}",
            found.len()
        );
        Ok(found[0])
    };
    let icmp = find("icmp")?;
    ensure!(
        icmp["orig_pkts"] == PINGS.to_string() && icmp["resp_pkts"] == PINGS.to_string(),
        "icmp record: {} / {} packets, {PINGS} pings sent",
        icmp["orig_pkts"],
        icmp["resp_pkts"]
    );
    let tcp = find("tcp")?;
    ensure!(
        tcp["id.resp_p"] == TCP_PORT.to_string()
            && tcp["orig_bytes"] == SENT.to_string()
            && tcp["resp_bytes"] == ANSWER.to_string(),
        "tcp record: orig_bytes {} resp_bytes {} (sent {SENT}, answered {ANSWER})",
        tcp["orig_bytes"],
        tcp["resp_bytes"]
    );
    ensure!(
        tcp["conn_state"] == "SF",
        "tcp record conn_state {}, SF expected",
        tcp["conn_state"]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_log_verification_needs_counts_and_close() {
        let header = "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\torig_bytes\tresp_bytes\torig_pkts\tresp_pkts\n";
        let icmp =
            format!("1\tC1\t{HOST_IP}\t8\t{PEER_IP}\t0\ticmp\tOTH\t0\t0\t{PINGS}\t{PINGS}\n");
        let tcp = format!(
            "2\tC2\t{HOST_IP}\t40000\t{PEER_IP}\t{TCP_PORT}\ttcp\tSF\t{SENT}\t{ANSWER}\t10\t8\n"
        );
        let good = format!("{header}{icmp}{tcp}#close\tx\n");
        verify_conn_logs(std::slice::from_ref(&good)).unwrap();
        assert!(verify_conn_logs(&[format!("{header}{icmp}{tcp}")]).is_err());
        assert!(verify_conn_logs(&[format!("{header}{icmp}#close\tx\n")]).is_err());
        // Logged twice across two files (a restart that duplicated it) fails too.
        let twice = [good.clone(), format!("{header}{tcp}#close\tx\n")];
        assert!(verify_conn_logs(&twice).is_err());
        let short = tcp.replace(&format!("\t{SENT}\t"), "\t1000\t");
        assert!(verify_conn_logs(&[format!("{header}{icmp}{short}#close\tx\n")]).is_err());
    }
}
