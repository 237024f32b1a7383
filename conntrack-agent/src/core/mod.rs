//! The agent core shared by `run` and `read`: the [`agent::Agent`] (datapath, timers, uids,
//! conn.log), Zeek's removal timers ([`tracker`]), network time ([`clock`]), the compact keys of the tracker's slots
//! ([`slot_key`]), and the event core
//! ([`events`]) that capabilities register with, with the lifecycle services it offers them:
//! thresholds, polling, removal hooks and per-connection inactivity timeouts; [`link_layer`]
//! keeps the first packet's link layer for the MAC/VLAN policy columns when they are on.

pub mod agent;
pub mod clock;
pub mod event_uid;
pub mod events;
pub mod inactivity;
pub mod link_layer;
pub mod polling;
pub mod removal_hooks;
pub mod slot_key;
pub mod thresholds;
pub mod timer_wheel;
pub mod tracker;
pub mod tunnels;
pub mod uid;
