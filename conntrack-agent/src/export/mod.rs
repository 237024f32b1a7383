//! Exports besides the logs: IPFIX records to a collector and Prometheus metrics.

pub mod ipfix;
pub mod metrics;
