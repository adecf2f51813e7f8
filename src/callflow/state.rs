//! What a callflow run remembers about its call between modules: the DTMF collections
//! (spec a.6 / j.3) and, for pivot, the requests made so far.

/// DTMF collections by name, in the order they were first made. The unnamed collection is
/// `default`: keys pressed during a prompt land there, and `collect_dtmf` without a
/// `collection_name` stores there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DigitCollections {
    entries: Vec<(String, String)>,
}

pub const DEFAULT_COLLECTION: &str = "default";

impl DigitCollections {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (replaces) a collection.
    pub fn set(&mut self, name: &str, digits: String) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1 = digits,
            None => self.entries.push((name.to_string(), digits)),
        }
    }

    /// Appends keys to a collection, creating it.
    pub fn append(&mut self, name: &str, digits: &str) {
        if digits.is_empty() {
            return;
        }
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(e) => e.1.push_str(digits),
            None => self.entries.push((name.to_string(), digits.to_string())),
        }
    }

    /// Removes a collection and returns its keys.
    pub fn take(&mut self, name: &str) -> Option<String> {
        let i = self.entries.iter().position(|(n, _)| n == name)?;
        Some(self.entries.remove(i).1)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True while no named collection exists (spec j.3: `Digits` is then a plain string).
    pub fn unnamed_only(&self) -> bool {
        self.entries.iter().all(|(n, _)| n == DEFAULT_COLLECTION)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// Per-call state of a callflow run.
#[derive(Clone, Debug, Default)]
pub struct FlowState {
    pub collections: DigitCollections,
    /// Pivot requests made so far (spec j.14: every request of the call counts).
    pub pivot_requests: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collections_keep_order_append_and_take() {
        let mut c = DigitCollections::default();
        assert!(c.unnamed_only());
        c.append(DEFAULT_COLLECTION, "12");
        c.append(DEFAULT_COLLECTION, "3");
        assert!(c.unnamed_only());
        c.set("pin", "9876".into());
        assert!(!c.unnamed_only());
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            vec![("default", "123"), ("pin", "9876")]
        );
        assert_eq!(c.take(DEFAULT_COLLECTION).as_deref(), Some("123"));
        assert_eq!(c.get("pin"), Some("9876"));
        c.append("x", "");
        assert_eq!(c.get("x"), None);
    }
}
