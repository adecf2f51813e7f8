//! What a callflow run remembers about its call between modules: the DTMF collections
//! (spec a.6 / j.3) and, for pivot, the requests made so far.

use crate::flow::DigitCollections;

/// Per-call state of a callflow run.
#[derive(Clone, Debug, Default)]
pub struct FlowState {
    pub collections: DigitCollections,
    /// Pivot requests made so far (spec j.14: every request of the call counts).
    pub pivot_requests: u32,
    /// A TwiML pivot's `cdr_url`: where the CDR is posted when the call ends (spec b.5).
    pub cdr_url: Option<String>,
}
