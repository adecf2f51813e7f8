//! A message's body by its Content-Type (RFC 3261 §7.4.1, §20.15).

use super::headers::header_str;

/// A body that is not SDP: another media type, or no Content-Type at all (§7.4.1 requires
/// one for any body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the body is not SDP")]
pub struct NotSdp;

/// Whether a Content-Type value names `media_type` (`type/subtype`): compared without case,
/// with parameters allowed after `;` and the whitespace RFC 3261 §25.1 allows around `/`.
pub fn media_type_is(content_type: &str, media_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default();
    match (media.split_once('/'), media_type.split_once('/')) {
        (Some((t, sub)), Some((want_t, want_sub))) => {
            t.trim().eq_ignore_ascii_case(want_t) && sub.trim().eq_ignore_ascii_case(want_sub)
        }
        _ => false,
    }
}

/// The SDP a request carries (an INVITE's offer, a re-INVITE's, the answer in an ACK):
/// `Ok(None)` without a body (whitespace only counts as none), the body when its Content-Type
/// is `application/sdp`, [`NotSdp`] otherwise.
pub fn sdp_body(req: &rsip::Request) -> Result<Option<&[u8]>, NotSdp> {
    sdp_of(req, &req.body)
}

/// The SDP a response carries (a callee's 183 or 2xx to our INVITE), by the same rules.
pub fn response_sdp_body(resp: &rsip::Response) -> Result<Option<&[u8]>, NotSdp> {
    sdp_of(resp, &resp.body)
}

fn sdp_of<'m>(
    msg: &'m impl rsip::message::HasHeaders,
    body: &'m [u8],
) -> Result<Option<&'m [u8]>, NotSdp> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match header_str(msg, "Content-Type") {
        Some(ct) if media_type_is(ct, "application/sdp") => Ok(Some(body)),
        _ => Err(NotSdp),
    }
}
