//! A call's DTMF collections (spec a.6, j.3): the keys pressed, by collection name, kept for
//! the whole call. The runtime fills them; pivot sends them with each request.

use std::collections::BTreeMap;

/// The collection DTMF goes to when no `collection_name` is given (spec a.6).
pub const DEFAULT_COLLECTION: &str = "default";

/// The call's DTMF collections, name → digits, kept for the whole call (spec a.6, j.3).
/// Ordered by name, so requests are reproducible.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DigitCollections {
    map: BTreeMap<String, String>,
}

impl DigitCollections {
    pub fn new() -> DigitCollections {
        DigitCollections::default()
    }

    /// Sets (replaces) a collection; `collect_dtmf` stores its result this way.
    pub fn set(&mut self, name: &str, digits: &str) {
        self.map.insert(name.to_string(), digits.to_string());
    }

    /// Appends to a collection, creating it; digits pressed during `play`/`tts` go to
    /// [`DEFAULT_COLLECTION`] this way.
    pub fn append(&mut self, name: &str, digits: &str) {
        self.map
            .entry(name.to_string())
            .or_default()
            .push_str(digits);
    }

    /// Removes a collection and returns its digits (`collect_dtmf` takes `default` first).
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.map.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// True while no named collection exists (only `default`, or nothing): spec j.3 then
    /// sends `Digits` as a plain string.
    pub fn unnamed_only(&self) -> bool {
        self.map.keys().all(|k| k == DEFAULT_COLLECTION)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
