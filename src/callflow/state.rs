//! What a callflow run remembers about its call between modules: the DTMF collections
//! (spec a.6 / j.3), the pivot requests made so far, and what is left for the call's end.

use super::runtime::AtCallEnd;
use crate::flow::bridge::BridgeOutcome;
use crate::flow::DigitCollections;

/// Per-call state of a callflow run.
#[derive(Default)]
pub struct FlowState {
    pub collections: DigitCollections,
    /// Pivot requests made so far (spec j.14: every request of the call counts).
    pub pivot_requests: u32,
    /// What to do when the call ends (a TwiML pivot's CDR POST, spec b.5); a later one
    /// replaces an earlier one.
    pub at_end: Option<Box<dyn AtCallEnd>>,
    /// How the last bridge of the run ended: a following pivot request carries it.
    pub last_bridge: Option<BridgeOutcome>,
}
