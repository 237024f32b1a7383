//! `run --kernel-log LEVEL`: the eBPF program's log lines for rare conditions (aya-log; the
//! program side is conntrack-ebpf/src/note.rs).

/// Which of the program's log lines to show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelLog {
    /// None (the default): the program skips its log lines after one load.
    #[default]
    Off,
    /// A connection lock left behind and taken over.
    Error,
    /// And the flow table full.
    Warn,
    /// As warn (no line uses this level).
    Info,
    /// And every frame whose headers could not be parsed.
    Debug,
    /// As debug.
    Trace,
}

impl KernelLog {
    /// aya-log's level byte (`AYA_LOG_LEVEL` in the program): lines at or below it are written.
    pub fn level_byte(self) -> u8 {
        match self {
            KernelLog::Off => 0,
            KernelLog::Error => aya_log::Level::Error as u8,
            KernelLog::Warn => aya_log::Level::Warn as u8,
            KernelLog::Info => aya_log::Level::Info as u8,
            KernelLog::Debug => aya_log::Level::Debug as u8,
            KernelLog::Trace => aya_log::Level::Trace as u8,
        }
    }
}

/// Where the program's log lines go (`KernelOptions::kernel_log`): the level to ask the
/// program for, and the logger that writes them (the program filters by level already).
#[derive(Clone, Copy)]
pub struct KernelLogSink {
    pub level: KernelLog,
    pub sink: &'static dyn log::Log,
}
