//! The routing table the SIP side consults for every INVITE: the config file's callflows
//! (fixed for the life of the process) plus the callflows created over the HTTP API, which
//! change while calls run. The one place that decides which account and which callflow an
//! INVITE gets.
//!
//! The API part is an immutable snapshot behind an `RwLock<Arc<…>>`: a lookup holds the read
//! lock only to clone the `Arc`, and a change builds a whole new snapshot and swaps it in, so
//! the next INVITE sees the new callflow and no lookup ever waits on the store or the API.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::config::{Account, CallflowEntry, Config};
use crate::flow::Node;

type Snapshot = Arc<HashMap<String, Arc<[CallflowEntry]>>>;

/// Config callflows + API callflows, per account.
#[derive(Default)]
pub struct Routes {
    api: RwLock<Snapshot>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    fn snapshot(&self) -> Snapshot {
        // A writer that panicked left a complete snapshot behind (it swaps whole maps).
        self.api.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The API callflows of an account, in the order they are tried for patterns.
    pub fn api_callflows(&self, account_id: &str) -> Arc<[CallflowEntry]> {
        self.snapshot()
            .get(account_id)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// Replaces the account's API callflows with `entries`; the next lookup sees them.
    pub fn set_account(&self, account_id: &str, entries: Vec<CallflowEntry>) {
        let mut guard = self.api.write().unwrap_or_else(|e| e.into_inner());
        let mut next: HashMap<String, Arc<[CallflowEntry]>> = (**guard).clone();
        if entries.is_empty() {
            next.remove(account_id);
        } else {
            next.insert(account_id.to_string(), Arc::from(entries));
        }
        *guard = Arc::new(next);
    }

    /// Finds the account (realm = request host, case-insensitive; else the only account) and
    /// the flow: an exact number of a config callflow, then of an API callflow, then the
    /// config patterns in file order, then the API patterns in creation order. Numbers are
    /// unique across both (the API refuses a number the config already uses).
    pub fn route<'a>(
        &self,
        cfg: &'a Config,
        request_user: &str,
        request_host: &str,
    ) -> Option<(&'a Account, Arc<Node>)> {
        let account = cfg.account_for_realm(request_host)?;
        self.route_in(account, request_user)
            .map(|flow| (account, flow))
    }

    /// The callflow of `account` for a dialled number (an authenticated caller's account).
    pub fn route_in(&self, account: &Account, request_user: &str) -> Option<Arc<Node>> {
        let api = self.api_callflows(&account.id);
        let by_number = |c: &&CallflowEntry| c.numbers.iter().any(|n| n.as_str() == request_user);
        let by_pattern = |c: &&CallflowEntry| c.patterns.iter().any(|p| p.is_match(request_user));
        let found = account
            .callflows
            .iter()
            .find(by_number)
            .or_else(|| api.iter().find(by_number))
            .or_else(|| account.callflows.iter().find(by_pattern))
            .or_else(|| api.iter().find(by_pattern))?;
        Some(found.flow.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::ModuleData;
    use regex::Regex;
    use std::path::Path;

    fn cfg() -> Config {
        Config::from_toml_str(
            r#"
[[accounts]]
id = "a"
realm = "a.test"
[[accounts.callflows]]
numbers = ["100"]
patterns = ["^9"]
flow = { module = "hangup" }
"#,
            Path::new("/x"),
        )
        .unwrap()
    }

    fn entry(numbers: &[&str], patterns: &[&str], code: u16) -> CallflowEntry {
        let flow = Node::from_json(&serde_json::json!({
            "module": "response", "data": {"code": code}
        }))
        .unwrap();
        CallflowEntry {
            id: Some(format!("id{code}")),
            name: None,
            numbers: numbers.iter().map(|s| s.to_string()).collect(),
            patterns: patterns.iter().map(|p| Regex::new(p).unwrap()).collect(),
            flow: Arc::new(flow),
            source: "api".into(),
        }
    }

    fn code(r: Option<(&Account, Arc<Node>)>) -> Option<u16> {
        r.map(|(_, n)| match &n.module {
            ModuleData::Response(r) => r.code,
            ModuleData::Hangup => 0,
            other => panic!("{other:?}"),
        })
    }

    #[test]
    fn api_callflows_take_effect_and_config_ones_stay_first() {
        let cfg = cfg();
        let routes = Routes::new();
        assert_eq!(code(routes.route(&cfg, "200", "a.test")), None);
        routes.set_account("a", vec![entry(&["200", "999"], &["^1"], 486)]);
        assert_eq!(code(routes.route(&cfg, "200", "a.test")), Some(486));
        // An API exact number beats a config pattern; a config number beats an API pattern.
        assert_eq!(code(routes.route(&cfg, "999", "a.test")), Some(486));
        assert_eq!(code(routes.route(&cfg, "100", "a.test")), Some(0));
        assert_eq!(code(routes.route(&cfg, "150", "a.test")), Some(486));
        assert_eq!(code(routes.route(&cfg, "900", "a.test")), Some(0));
        routes.set_account("a", vec![]);
        assert_eq!(code(routes.route(&cfg, "200", "a.test")), None);
        assert!(routes.api_callflows("a").is_empty());
    }

    fn routing_config() -> Config {
        let (cfg, problems) = Config::parse(
            r#"
[[accounts]]
id = "a"
realm = "Alpha.Test"
[[accounts.callflows]]
name = "pattern first in the file"
patterns = ["^5"]
flow = { module = "hangup" }
[[accounts.callflows]]
name = "exact"
numbers = ["5000"]
flow = { module = "hangup" }
[[accounts.callflows]]
name = "second pattern"
patterns = ["00$", "^6"]
flow = { module = "hangup" }
[[accounts]]
id = "b"
realm = "beta.test"
[[accounts.callflows]]
name = "b-any"
patterns = ["."]
flow = { module = "hangup" }
"#,
            Path::new("/x"),
        );
        assert!(problems.is_empty(), "{problems:?}");
        cfg
    }

    /// The account and the name of the config callflow an INVITE gets.
    fn routed<'a>(cfg: &'a Config, user: &str, host: &str) -> Option<(&'a str, &'a str)> {
        let (a, flow) = Routes::new().route(cfg, user, host)?;
        let c = a.callflows.iter().find(|c| Arc::ptr_eq(&c.flow, &flow))?;
        Some((a.id.as_str(), c.name.as_deref().unwrap_or("")))
    }

    #[test]
    fn route_by_realm_number_then_patterns_in_order() {
        let cfg = routing_config();
        // Exact number wins over an earlier pattern that also matches.
        assert_eq!(routed(&cfg, "5000", "alpha.test"), Some(("a", "exact")));
        // Realm is case-insensitive; patterns in file order.
        assert_eq!(
            routed(&cfg, "5100", "ALPHA.test"),
            Some(("a", "pattern first in the file"))
        );
        assert_eq!(
            routed(&cfg, "600", "alpha.test"),
            Some(("a", "second pattern"))
        );
        // Unanchored like Kazoo's re:run: "00$" matches inside a longer number.
        assert_eq!(
            routed(&cfg, "7700", "alpha.test"),
            Some(("a", "second pattern"))
        );
        assert_eq!(routed(&cfg, "7", "alpha.test"), None);
        assert_eq!(routed(&cfg, "7", "beta.test"), Some(("b", "b-any")));
        // Two accounts and an unknown host: no account.
        assert_eq!(routed(&cfg, "5000", "127.0.0.1"), None);
    }

    #[test]
    fn route_falls_back_to_the_only_account() {
        let (cfg, problems) = Config::parse(
            "[[accounts]]\nid = \"a\"\nrealm = \"a.test\"\n[[accounts.callflows]]\nnumbers = [\"5000\"]\nflow = { module = \"hangup\" }",
            Path::new("/x"),
        );
        assert!(problems.is_empty());
        assert_eq!(routed(&cfg, "5000", "127.0.0.1"), Some(("a", "")));
        assert_eq!(routed(&cfg, "5001", "127.0.0.1"), None);
    }

    #[test]
    fn the_demo_answers_any_number_at_any_host() {
        let cfg = Config::embedded_default();
        let (a, flow) = Routes::new()
            .route(&cfg, "12345", "somewhere.example")
            .unwrap();
        assert_eq!(a.id, crate::config::DEMO_ACCOUNT_ID);
        assert_eq!(flow.module.name(), "play");
    }
}
