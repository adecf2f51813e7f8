//! The debug page (`/ui`, issue 14): server-rendered HTML over what the API already keeps —
//! the account's recent calls, and per call its event log as a timeline beside each pivot
//! request's debug records. No script; one stylesheet compiled in.
//!
//! This file decides the routes, the session and the page's security: a session is an API
//! token (from the login form's API key, checked by `auth::exchange_key` like `api_auth`, or
//! from `?auth_token=`) kept in an HttpOnly, SameSite=Strict cookie scoped to `/ui`; a POST
//! whose `Sec-Fetch-Site` (or else `Origin`) says another site is refused; every answer carries
//! the CSP and no-store headers. What the pages show is decided in `ui/calls.rs` and
//! `ui/call.rs`, the HTML pieces and escaping in `ui/html.rs`.

mod call;
mod calls;
mod html;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{blocking, ApiError, Paging, Shared};

/// The session cookie: the API token itself (HttpOnly, so no script of any page reads it).
const COOKIE: &str = "pivotd_ui";

/// Calls per page of the list.
const PAGE: usize = 50;

/// The stylesheet, served from `/ui/style.css` (CSP `default-src 'self'`).
const STYLE: &str = include_str!("ui/style.css");

/// The routes under `/ui`, each answer with [`security_headers`].
pub(crate) fn router(state: Shared) -> Router<Shared> {
    Router::new()
        .route("/ui", get(index))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/calls/{call_id}", get(call_page))
        .route("/ui/style.css", get(style))
        .route("/ui/{*rest}", get(not_found))
        .route_layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Marks the page's answers, which the API's envelope leaves as they are.
#[derive(Clone, Copy)]
pub(crate) struct Html;

/// CSP: the page loads its stylesheet and nothing else (no script, no frame, no form target
/// elsewhere); plus no MIME sniffing, no caching of call data, no Referer carrying a Call-ID.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(Html);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// The session's token, from the cookie.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The account of the request's session, `None` without a live one.
async fn session(st: &Shared, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match cookie_token(headers) {
        Some(t) => super::auth::token_account(st, &t).await,
        None => Ok(None),
    }
}

/// Sets the session cookie to `token` and sends the browser to `/ui` (303: a GET, and the
/// token out of the address bar and the history).
fn start_session(st: &Shared, token: &str) -> Response {
    let max_age = st.parts.cfg.get().api.token_lifetime_s;
    // Tokens are hex; anything else never reaches a header.
    if !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return login_form(StatusCode::UNAUTHORIZED, Some("That token is not valid."));
    }
    let cookie =
        format!("{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    see_other(Some(&cookie))
}

fn see_other(cookie: Option<&str>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui"));
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn login_form(status: StatusCode, message: Option<&str>) -> Response {
    html_response(status, html::login(message))
}

/// A page for a failure of ours (the store), never the request's content.
fn fault(e: ApiError) -> Response {
    tracing::warn!("ui: {e:?}");
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        html::message_page(
            "Error",
            "The store could not be read; see the server's log.",
        ),
    )
}

/// `GET /ui`: with `?auth_token=` a session from that token; with a session the recent
/// calls; else the login form.
async fn index(
    State(st): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = q.get("auth_token") {
        return match super::auth::token_account(&st, token).await {
            Ok(Some(_)) => start_session(&st, token),
            Ok(None) => login_form(
                StatusCode::UNAUTHORIZED,
                Some("That token is unknown or has expired. Log in with the API key."),
            ),
            Err(e) => fault(e),
        };
    }
    let account = match session(&st, &headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return login_form(StatusCode::OK, None),
        Err(e) => return fault(e),
    };
    let mut q = q;
    q.insert("page_size".into(), PAGE.to_string());
    let paging = match Paging::from_query(&q) {
        Ok(p) => p,
        Err(_) => {
            return html_response(
                StatusCode::BAD_REQUEST,
                html::message_page("Bad page", "That is not a page this server gave."),
            )
        }
    };
    let store = st.parts.store.clone();
    let acc = account.clone();
    let after = paging.after.clone();
    let limit = paging.fetch();
    let rows = blocking(move || {
        store.recent_calls(&acc, after.as_ref().map(|(t, c)| (*t, c.as_str())), limit)
    })
    .await;
    match rows {
        Ok(rows) => html_response(StatusCode::OK, calls::page(&account, rows, PAGE)),
        Err(e) => fault(e),
    }
}

/// Whether a POST comes from this site. A browser that sends `Sec-Fetch-Site` says so
/// itself (its `Origin` is `null` here: the page's `Referrer-Policy: no-referrer` makes
/// Chromium send that on a form POST); else an `Origin` must be this host. Without either
/// (an old browser, a script) the SameSite=Strict cookie is the defence.
fn same_origin(headers: &HeaderMap) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = h("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match h("origin") {
        None => true,
        Some(origin) => {
            let host = h("host").unwrap_or("");
            !host.is_empty()
                && (origin == format!("http://{host}") || origin == format!("https://{host}"))
        }
    }
}

fn cross_site() -> Response {
    html_response(
        StatusCode::FORBIDDEN,
        html::message_page("Refused", "A form of another site may not post here."),
    )
}

/// `POST /ui/login` (form `api_key`): the key checked as `api_auth` checks it, its failures
/// counted per address under the same limit.
async fn login(
    State(st): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let ip = peer.ip();
    if st.tokens.limited(ip) {
        return login_form(
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed attempts from this address; try again in a minute."),
        );
    }
    let key = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "api_key")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    match super::auth::exchange_key(&st, ip, &key).await {
        Ok(Some((_, token))) => start_session(&st, &token),
        Ok(None) => login_form(StatusCode::UNAUTHORIZED, Some("Wrong API key.")),
        Err(e) => fault(e),
    }
}

/// `POST /ui/logout`: the token revoked, the cookie cleared.
async fn logout(State(st): State<Shared>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    if let Some(t) = cookie_token(&headers) {
        if let Err(e) = st.tokens.revoke(&t).await {
            return fault(e);
        }
    }
    see_other(Some(&format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
    )))
}

/// `GET /ui/calls/{CALL_ID}` (URL-encoded): the call's timeline and pivot requests; 404 when
/// the account has neither events nor debug records of it.
async fn call_page(
    State(st): State<Shared>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let account = match session(&st, &headers).await {
        Ok(Some(a)) => a,
        Ok(None) => return login_form(StatusCode::UNAUTHORIZED, None),
        Err(e) => return fault(e),
    };
    let store = st.parts.store.clone();
    let (acc, id) = (account.clone(), call_id.clone());
    let read = blocking(move || {
        let events = store.call_events(&acc, &id)?;
        let records = store.debug_records(&acc, &id)?;
        Ok((events, records))
    })
    .await;
    match read {
        Ok((events, records)) if events.is_empty() && records.is_empty() => html_response(
            StatusCode::NOT_FOUND,
            html::message_page(
                "No such call",
                &format!(
                    "This account has no call {} (or its records are past retention).",
                    html::esc(&call_id)
                ),
            ),
        ),
        Ok((events, records)) => html_response(
            StatusCode::OK,
            call::page(&account, &call_id, &events, &records),
        ),
        Err(e) => fault(e),
    }
}

async fn style() -> Response {
    let mut r = STYLE.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    r
}

async fn not_found() -> Response {
    html_response(
        StatusCode::NOT_FOUND,
        html::message_page("Not found", "There is no such page."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; pivotd_ui=abc123 ; b=2")]);
        assert_eq!(cookie_token(&h).as_deref(), Some("abc123"));
        assert_eq!(cookie_token(&headers(&[("cookie", "pivotd_ui=")])), None);
        assert_eq!(cookie_token(&headers(&[("cookie", "xpivotd_ui=1")])), None);
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn a_post_from_another_site_is_refused() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8000")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8000")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[("origin", "http://x")])));
        // Chromium's form POST under `Referrer-Policy: no-referrer`.
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8000"),
            ("origin", "http://127.0.0.1:8000"),
            ("sec-fetch-site", "same-site")
        ])));
    }
}
