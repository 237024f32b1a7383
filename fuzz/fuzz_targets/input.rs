//! Arbitrary bytes as a trace file through `read`'s whole pipeline on the host engine: the
//! pcap/pcapng reader, link layers, the defragmenter, checksum validation, the engine, the
//! timers and the conn.log writer. Errors are fine (a bad file is reported); a panic, a hang
//! or memory out of proportion to the input is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    conntrack_agent::fuzz_input(data);
});
