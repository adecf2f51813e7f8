//! A bridge as plain data: what a module (`device`, `user`, `ring_group`, `resources`,
//! `offnet`, TwiML `<Dial>`) asks the call to ring, and how the attempt ended. The call layer
//! resolves the targets (registered contacts, carriers, allowed SIP targets) and carries the
//! bridge out; the modules read the outcome (spec c.6: a child named by the hangup cause or
//! `sip:NNN`, else `_`; TwiML's `DialCallStatus`).

use std::time::Duration;

/// Kazoo's ring timeout when a module gives none (or 0, the schemas' written default).
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest ring timeout or delay a module's data may give, in seconds: a day, as `sleep`.
/// Kazoo sets no bound; this one only keeps absurd values out.
pub const MAX_RING_SECONDS: i64 = 86_400;

/// A module's ring timeout in seconds as a duration: 0 (the device schema's written default)
/// means [`DEFAULT_RING_TIMEOUT`].
pub fn ring_timeout(seconds: u32) -> Duration {
    if seconds == 0 {
        DEFAULT_RING_TIMEOUT
    } else {
        Duration::from_secs(u64::from(seconds))
    }
}

/// What one endpoint of a bridge names. Device, user and group ids resolve inside the
/// caller's account only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A device: every contact it is registered at, at once.
    Device { id: String },
    /// A user: every device it owns, at once.
    User { id: String },
    /// A number through carriers, tried in order, the next on 5xx/6xx/timeout: the account's
    /// resources (`local: true`) or the system's (`[[resources]]`, else the account's).
    Number { number: String, local: bool },
    /// A SIP URI (TwiML `<Sip>`): dialled only when the account allows it (one of its devices'
    /// contacts, one of its carriers, or its `sip_targets`).
    Sip { uri: String },
}

/// One endpoint of a bridge with its own timing (ring groups set these per endpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeEndpoint {
    pub target: Target,
    /// Rung this long after the bridge starts.
    pub delay: Duration,
    /// Stops ringing this endpoint after this long (None: the bridge's timeout).
    pub timeout: Option<Duration>,
}

impl BridgeEndpoint {
    pub fn now(target: Target) -> BridgeEndpoint {
        BridgeEndpoint {
            target,
            delay: Duration::ZERO,
            timeout: None,
        }
    }
}

/// The caller ID the callee sees, when a module sets one (else the caller's own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallerIdOverride {
    pub name: Option<String>,
    pub number: Option<String>,
}

/// What a module asks the call to ring. The endpoints ring at once (each after its delay);
/// the first to answer is bridged and the others are cancelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeRequest {
    pub endpoints: Vec<BridgeEndpoint>,
    /// How long the whole attempt rings before it ends with `NO_ANSWER`.
    pub timeout: Duration,
    pub caller_id: Option<CallerIdOverride>,
    /// A device may ring the device that is calling (`can_call_self`); by default it is left
    /// out of the endpoints.
    pub can_call_self: bool,
    /// The longest the bridged conversation may last (TwiML `timeLimit`).
    pub time_limit: Option<Duration>,
    /// `*` from the caller ends the bridge, and the caller's flow goes on (TwiML
    /// `hangupOnStar`).
    pub hangup_on_star: bool,
    /// Media played to the caller while the callee rings, as early media (a prompt id, a URL
    /// or a `tone_stream://%(on,off,freq…)`); the callee's own early media wins over it.
    /// None: the caller's phone rings by itself (180), or pivotd's ring tone once early
    /// media is open.
    pub ringback: Option<String>,
}

impl BridgeRequest {
    /// A request for `endpoints` with Kazoo's defaults.
    pub fn to(endpoints: Vec<BridgeEndpoint>) -> BridgeRequest {
        BridgeRequest {
            endpoints,
            timeout: DEFAULT_RING_TIMEOUT,
            caller_id: None,
            can_call_self: false,
            time_limit: None,
            hangup_on_star: false,
            ringback: None,
        }
    }
}

/// How a bridge attempt ended, in Twilio's words (`DialCallStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialStatus {
    /// The callee answered; the conversation is over (the callee hung up, or `*`, or the time
    /// limit) and the caller is still on the line.
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl DialStatus {
    /// Twilio's `DialCallStatus` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DialStatus::Completed => "completed",
            DialStatus::Busy => "busy",
            DialStatus::NoAnswer => "no-answer",
            DialStatus::Failed => "failed",
            DialStatus::Canceled => "canceled",
        }
    }
}

/// The outcome of [`BridgeRequest`] while the caller is still on the line (a caller who hangs
/// up ends the run instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeOutcome {
    pub status: DialStatus,
    /// The hangup cause in FreeSWITCH/Kazoo terms (`NORMAL_CLEARING`, `USER_BUSY`,
    /// `NO_ANSWER`, `CALL_REJECTED`, `UNALLOCATED_NUMBER`, …).
    pub cause: &'static str,
    /// The final SIP code of the failed attempt (the best of the forks), if one came.
    pub sip_code: Option<u16>,
    /// The Call-ID of the answered (or last tried) outbound leg.
    pub b_call_id: Option<String>,
    /// How long the bridged conversation lasted (zero if never answered).
    pub duration: Duration,
}

impl BridgeOutcome {
    /// A failure before any INVITE went out (nothing to ring, not allowed).
    pub fn failed(cause: &'static str) -> BridgeOutcome {
        BridgeOutcome {
            status: DialStatus::Failed,
            cause,
            sip_code: None,
            b_call_id: None,
            duration: Duration::ZERO,
        }
    }

    /// The outcome of an attempt that ended with the final SIP `code` (no answer).
    pub fn from_sip_code(code: u16, b_call_id: Option<String>) -> BridgeOutcome {
        let cause = cause_of_sip_code(code);
        let status = match cause {
            "USER_BUSY" => DialStatus::Busy,
            "NO_ANSWER" | "NO_USER_RESPONSE" => DialStatus::NoAnswer,
            "ORIGINATOR_CANCEL" => DialStatus::Canceled,
            _ => DialStatus::Failed,
        };
        BridgeOutcome {
            status,
            cause,
            sip_code: Some(code),
            b_call_id,
            duration: Duration::ZERO,
        }
    }

    /// Whether the bridge was answered (the callee took the call).
    pub fn answered(&self) -> bool {
        self.status == DialStatus::Completed
    }
}

/// The hangup cause FreeSWITCH (and so Kazoo) gives a final SIP response to an outbound
/// INVITE (FreeSWITCH's sip → Q.850 table, as Kazoo's `hangup-code.xml` reads it back).
pub fn cause_of_sip_code(code: u16) -> &'static str {
    match code {
        200..=299 => "NORMAL_CLEARING",
        401 | 402 | 403 | 407 | 603 => "CALL_REJECTED",
        404 | 485 | 604 => "UNALLOCATED_NUMBER",
        405 | 406 | 415 | 501 => "SERVICE_UNAVAILABLE",
        408 | 504 => "RECOVERY_ON_TIMER_EXPIRE",
        410 => "NUMBER_CHANGED",
        413 | 414 | 416 | 420 | 421 | 423 | 505 | 513 => "INTERWORKING",
        480 => "NO_USER_RESPONSE",
        484 => "INVALID_NUMBER_FORMAT",
        486 | 600 => "USER_BUSY",
        487 => "ORIGINATOR_CANCEL",
        488 | 606 => "INCOMPATIBLE_DESTINATION",
        502 => "NETWORK_OUT_OF_ORDER",
        503 => "NORMAL_TEMPORARY_FAILURE",
        400 | 481 | 500 => "NORMAL_TEMPORARY_FAILURE",
        _ => "NORMAL_UNSPECIFIED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_codes_map_to_kazoo_causes_and_twilio_statuses() {
        let busy = BridgeOutcome::from_sip_code(486, None);
        assert_eq!((busy.cause, busy.status), ("USER_BUSY", DialStatus::Busy));
        let rejected = BridgeOutcome::from_sip_code(603, None);
        assert_eq!(
            (rejected.cause, rejected.status),
            ("CALL_REJECTED", DialStatus::Failed)
        );
        assert_eq!(cause_of_sip_code(404), "UNALLOCATED_NUMBER");
        assert_eq!(
            BridgeOutcome::from_sip_code(480, None).status,
            DialStatus::NoAnswer
        );
        assert_eq!(DialStatus::NoAnswer.as_str(), "no-answer");
        assert!(!busy.answered());
    }
}
