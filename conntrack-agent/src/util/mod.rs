//! Small shared pieces with no dependency on the rest of the agent.

pub mod config_values;
pub mod hashing;
pub mod site;
pub mod stop;
