//! Tests of the whole agent core (capabilities on the event core, Zeek's conn-package test
//! scripts reproduced); tests of one module live beside it.

pub mod fixtures;
mod lifecycle;
mod policy_fields;
mod snaplen_gaps;
mod zeek_lifecycle;
mod zeek_thresholds;
