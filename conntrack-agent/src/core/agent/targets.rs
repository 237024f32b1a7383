//! What the agent hands its parts to act on while it works: both datapaths as the thresholds
//! and the capabilities see them ([`Datapaths`], [`PayloadTarget`], which adds the tracker's
//! records) and as the tracker's timers see them ([`TimerView`]).

use super::TrackKey;
use crate::core::event_uid::EventUid;
use crate::core::events::{ConnInfo, EventCore};
use crate::core::thresholds::ThresholdTarget;
use crate::core::tracker::{ConnView, TimerHost, Tracker};
use crate::core::uid::Uid;
use crate::datapath::host::HostDatapath;
use crate::datapath::{Datapath, ThresholdError};
use conntrack_common::conn::Conn;
use conntrack_common::key::FlowKey;
use conntrack_common::threshold::ThresholdCommand;

/// Both datapaths as the thresholds see them: a connection is in the main one or, if its first
/// packet found the kernel's table full, in the overflow table.
pub(super) struct Datapaths<'a> {
    pub(super) main: &'a mut dyn Datapath,
    pub(super) overflow: &'a mut HostDatapath,
}

impl ThresholdTarget for Datapaths<'_> {
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        match self.main.set_thresholds(cmd) {
            Err(ThresholdError::NotFound) => self.overflow.set_thresholds(cmd),
            other => other,
        }
    }
    fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        self.main.lookup(key).or_else(|| self.overflow.lookup(key))
    }
    fn stop_sampling(&mut self, key: &FlowKey) -> bool {
        self.main.stop_sampling(key) || self.overflow.stop_sampling(key)
    }
    fn narrow_sampling(&mut self, key: &FlowKey) -> bool {
        self.main.narrow_sampling(key) || self.overflow.narrow_sampling(key)
    }
    fn content_counters(
        &self,
        key: &FlowKey,
    ) -> Option<conntrack_common::contents::ContentCounters> {
        self.main.content_counters(key)
    }
}

/// What a capability's payload handler acts on: both datapaths, and the tracker, whose record
/// of a connection keeps the service capability's word for it.
pub(super) struct PayloadTarget<'a> {
    pub(super) dps: Datapaths<'a>,
    pub(super) tracker: &'a mut Tracker<TrackKey>,
}

impl ThresholdTarget for PayloadTarget<'_> {
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        self.dps.set_thresholds(cmd)
    }
    fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        self.dps.lookup(key)
    }
    fn stop_sampling(&mut self, key: &FlowKey) -> bool {
        self.dps.stop_sampling(key)
    }
    fn narrow_sampling(&mut self, key: &FlowKey) -> bool {
        self.dps.narrow_sampling(key)
    }
    fn content_counters(
        &self,
        key: &FlowKey,
    ) -> Option<conntrack_common::contents::ContentCounters> {
        self.dps.content_counters(key)
    }
    /// Where the main datapath keeps it (the host engine), else in the tracker's record.
    fn service_mut(&mut self, key: &FlowKey) -> Option<&mut u32> {
        match self.dps.main.service_word(key) {
            Some(word) => Some(word),
            None => self.tracker.service_mut(key),
        }
    }
}

/// What the tracker's timers see while they fire: both datapaths, and the capabilities for
/// Zeek's `connection_timing_out` veto.
pub(super) struct TimerView<'a> {
    pub(super) main: &'a mut dyn Datapath,
    pub(super) overflow: &'a mut HostDatapath,
    pub(super) core: &'a mut EventCore,
    pub(super) now_ns: u64,
}

impl TimerHost<TrackKey> for TimerView<'_> {
    fn read(&mut self, key: &TrackKey) -> Option<ConnView> {
        let mut view = None;
        let mut read = |c: &Conn| view = Some(ConnView::of(c));
        if !self.main.with_conn(key, &mut read) {
            self.overflow.with_conn(key, &mut read);
        }
        view
    }

    fn keep_timing_out(&mut self, key: &TrackKey, uid: &Uid) -> bool {
        if !self.core.handles_timing_out() {
            return false;
        }
        let mut target = Datapaths {
            main: &mut *self.main,
            overflow: &mut *self.overflow,
        };
        let Some(conn) = target.lookup(key) else {
            return false;
        };
        let info = ConnInfo {
            key: *key,
            uid: EventUid::new(Some(uid.clone())),
            conn,
            ts_ns: self.now_ns,
        };
        self.core.keep_timing_out(&mut target, info)
    }
}
