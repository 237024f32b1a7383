//! The `service` column: which application protocols a connection carries, as Zeek's protocol
//! analyzers confirm them. [`detect`] holds the detectors, pure functions over each direction's
//! first payload bytes.

// The detectors are called by the service capability; until it is wired in, only the tests
// use them (remove this allow then).
#[allow(dead_code, unused_imports)]
pub mod detect;
