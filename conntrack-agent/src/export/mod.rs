//! Exports besides the logs: IPFIX records to a collector and Prometheus metrics.

pub mod ipfix;
mod ipfix_stats;
pub mod metrics;
