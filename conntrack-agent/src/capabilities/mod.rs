//! Capabilities: what the agent does with connections beyond writing conn.log, each a module
//! that plugs into the event core ([`crate::core::events`]), as Zeek's conn package has a script
//! per capability. The core knows none of them by name.

pub mod alerts;
pub mod conn_long;
pub mod contents;
pub mod removal_log;
pub mod service;
