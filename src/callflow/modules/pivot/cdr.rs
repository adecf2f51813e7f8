//! A TwiML pivot's CDR (spec b.5): when the call ends, its record is posted form-encoded to
//! the node's `cdr_url`, in the background: the answer is ignored and the call is not held up.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::PivotServices;
use crate::callflow::runtime::AtCallEnd;
use crate::callflow::CallTiming;
use crate::flow::CallInfo;
use crate::logsafe::wire;
use crate::pivot::client::HttpRequest;
use crate::pivot::request::{cdr_params, form_encode, CONTENT_TYPE_FORM};

/// Set by the pivot module when a TwiML answer's node has a `cdr_url`.
pub(super) struct CdrPost {
    pub url: String,
    pub svc: Arc<PivotServices>,
}

impl AtCallEnd for CdrPost {
    fn call_ended(&self, info: &CallInfo, timing: CallTiming) {
        let now = SystemTime::now();
        let secs = |from: Option<SystemTime>| {
            from.and_then(|t| now.duration_since(t).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let body = form_encode(&cdr_params(
            info,
            timing.answered.is_some(),
            secs(timing.started),
            secs(timing.answered),
        ));
        let (url, svc) = (self.url.clone(), self.svc.clone());
        tokio::spawn(async move {
            let u = match svc.http.guard().check_url_static(&url) {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(url = %wire(&url), reason = %wire(&e.to_string()), "cdr_url refused by the URL guard");
                    return;
                }
            };
            let req = HttpRequest::post(u, CONTENT_TYPE_FORM, body).timeout(Duration::from_secs(5));
            if let Err(e) = svc.http.send(req).await {
                tracing::warn!(url = %wire(&url), reason = %wire(&e.to_string()), "CDR not delivered");
            }
        });
    }
}
