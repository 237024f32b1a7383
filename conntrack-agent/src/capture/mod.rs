//! Offline input for `read`: trace files, link layers, IP fragment reassembly and the checksum
//! policy, down to the IP packets the datapath takes; and capture filters (`-f`), which `run`
//! compiles for the kernel too.

pub mod checksum;
pub mod defrag;
pub mod filter;
pub mod link;
pub mod pcap;
pub mod tunnels;
