//! Log files as Zeek writes them: the conn.log record and its TSV/JSON writer, the Community ID
//! column, the MAC and VLAN policy columns, and log files with headers, `#close` and rotation.

pub mod community_id;
pub mod conn_log;
pub mod conn_tsv;
pub mod health;
pub mod l2_fields;
pub mod record;
pub mod rotate;
pub mod tunnel_log;
