//! Value types every section of the config file shares: durations as people write them, and
//! errors that carry the byte range of the value they are about (reported as `FILE:LINE:COL`).

use serde::Deserialize;
use std::ops::Range;
use std::time::Duration;

/// An error in the section: the message and the byte range of the value it is about.
pub type SpanError = (Range<usize>, String);

/// `"30s"`, `"5m"`, `"1h 30m"`, `"250ms"` (humantime's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration {s:?} ({e}): expected e.g. \"30s\", \"5m\", \"1h\"")
            })
    }
}
