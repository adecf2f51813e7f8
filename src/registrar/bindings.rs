//! The location service (RFC 3261 §10.3 steps 6–8): the contacts each device is registered
//! at, changed all-or-nothing by one REGISTER. No I/O here; times are Unix seconds.

use std::collections::HashMap;

use crate::sip::message::{uri_equivalent, ContactValue, Contacts};
use crate::store::Registration;

/// A device's address-of-record, as the registrar keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceKey {
    pub account_id: String,
    pub device_id: String,
}

/// How long registrations may last.
#[derive(Clone, Copy, Debug)]
pub struct ExpiryRules {
    pub min: u32,
    pub max: u32,
    pub default: u32,
    pub max_contacts: usize,
}

/// What a REGISTER says about its contacts, read from the request.
pub struct Update<'a> {
    pub contacts: &'a Contacts,
    /// The Expires header.
    pub expires: Option<u32>,
    pub call_id: &'a str,
    pub cseq: u32,
    /// Everything a binding records besides its contact, expiry, Call-ID and CSeq.
    pub template: &'a Registration,
    pub now: u64,
}

/// Why a REGISTER changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// 423 with Min-Expires (RFC 3261 §10.3 step 7).
    #[error("registration interval below {min} s")]
    IntervalTooBrief { min: u32 },
    /// 400: `Contact: *` needs `Expires: 0` (step 6).
    #[error("Contact * without Expires: 0")]
    StarNeedsZero,
    /// 500 with Retry-After: an older REGISTER of the same Call-ID, arriving late (step 7).
    #[error("CSeq not above the binding's")]
    OutOfOrder,
}

/// Every device's current bindings.
#[derive(Default)]
pub struct Bindings {
    by_device: HashMap<DeviceKey, Vec<Registration>>,
}

impl Bindings {
    /// Puts back bindings read from the store (at start).
    pub fn load(&mut self, r: Registration) {
        let key = DeviceKey {
            account_id: r.account_id.clone(),
            device_id: r.device_id.clone(),
        };
        self.by_device.entry(key).or_default().push(r);
    }

    /// The unexpired bindings of a device.
    pub fn current(&self, key: &DeviceKey, now: u64) -> Vec<Registration> {
        self.by_device
            .get(key)
            .map(|l| l.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default()
    }

    /// Every unexpired binding, by device.
    pub fn all(&self, now: u64) -> Vec<Registration> {
        let mut out: Vec<Registration> = self
            .by_device
            .values()
            .flatten()
            .filter(|b| b.expires_at > now)
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (&a.account_id, &a.device_id, &a.contact).cmp(&(
                &b.account_id,
                &b.device_id,
                &b.contact,
            ))
        });
        out
    }

    /// Drops all of a device's bindings; returns how many went.
    pub fn remove(&mut self, key: &DeviceKey) -> usize {
        self.by_device.remove(key).map_or(0, |l| l.len())
    }

    /// How many unexpired bindings there are.
    pub fn count(&self, now: u64) -> usize {
        self.by_device
            .values()
            .flatten()
            .filter(|b| b.expires_at > now)
            .count()
    }

    /// Drops expired bindings; returns how many went.
    pub fn sweep(&mut self, now: u64) -> usize {
        let mut gone = 0;
        self.by_device.retain(|_, l| {
            let before = l.len();
            l.retain(|b| b.expires_at > now);
            gone += before - l.len();
            !l.is_empty()
        });
        gone
    }

    /// Applies a REGISTER to a device's bindings (steps 6–8); on success returns the
    /// device's bindings after it (empty: none left), which the 200 lists.
    pub fn apply(
        &mut self,
        key: &DeviceKey,
        u: &Update<'_>,
        rules: ExpiryRules,
    ) -> Result<Vec<Registration>, BindingError> {
        let mut list = self.current(key, u.now);
        match u.contacts {
            Contacts::Star => {
                if u.expires != Some(0) {
                    return Err(BindingError::StarNeedsZero);
                }
                if list
                    .iter()
                    .any(|b| b.call_id == u.call_id && u.cseq <= b.cseq)
                {
                    return Err(BindingError::OutOfOrder);
                }
                list.clear();
            }
            Contacts::List(contacts) => {
                for c in contacts {
                    let expires = c.expires().or(u.expires).unwrap_or(rules.default);
                    if expires != 0 && expires < rules.min {
                        return Err(BindingError::IntervalTooBrief { min: rules.min });
                    }
                }
                for c in contacts {
                    let expires = c.expires().or(u.expires).unwrap_or(rules.default);
                    let existing = list.iter().position(|b| uri_equivalent(&b.contact, &c.uri));
                    if let Some(i) = existing {
                        let b = &list[i];
                        if b.call_id == u.call_id && u.cseq <= b.cseq {
                            return Err(BindingError::OutOfOrder);
                        }
                        list.remove(i);
                    }
                    if expires == 0 {
                        continue;
                    }
                    if list.len() >= rules.max_contacts {
                        // A phone that changed address leaves its old binding behind: the
                        // one closest to expiring makes room rather than the REGISTER failing.
                        if let Some(oldest) = (0..list.len()).min_by_key(|&i| list[i].expires_at) {
                            list.remove(oldest);
                        }
                    }
                    list.push(binding(u, c, expires.min(rules.max)));
                }
            }
        }
        if list.is_empty() {
            self.by_device.remove(key);
        } else {
            self.by_device.insert(key.clone(), list.clone());
        }
        Ok(list)
    }
}

fn binding(u: &Update<'_>, c: &ContactValue, expires: u32) -> Registration {
    Registration {
        contact: c.uri.clone(),
        expires_at: u.now + u64::from(expires),
        call_id: u.call_id.to_string(),
        cseq: u.cseq,
        instance: c.param("+sip.instance").flatten().map(str::to_string),
        q: c.param("q").flatten().map(str::to_string),
        updated: u.now,
        ..u.template.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: ExpiryRules = ExpiryRules {
        min: 60,
        max: 3600,
        default: 1800,
        max_contacts: 2,
    };

    fn key() -> DeviceKey {
        DeviceKey {
            account_id: "a".into(),
            device_id: "d1".into(),
        }
    }

    fn template() -> Registration {
        Registration {
            account_id: "a".into(),
            device_id: "d1".into(),
            contact: String::new(),
            expires_at: 0,
            call_id: String::new(),
            cseq: 0,
            path: Vec::new(),
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: "UDP".into(),
            user_agent: None,
            instance: None,
            q: None,
            updated: 0,
        }
    }

    fn contact(uri: &str, expires: Option<u32>) -> ContactValue {
        ContactValue {
            uri: uri.into(),
            params: expires
                .map(|e| vec![("expires".to_string(), Some(e.to_string()))])
                .unwrap_or_default(),
        }
    }

    fn apply(
        b: &mut Bindings,
        contacts: Contacts,
        expires: Option<u32>,
        call_id: &str,
        cseq: u32,
        now: u64,
    ) -> Result<Vec<Registration>, BindingError> {
        let t = template();
        b.apply(
            &key(),
            &Update {
                contacts: &contacts,
                expires,
                call_id,
                cseq,
                template: &t,
                now,
            },
            RULES,
        )
    }

    fn uris(l: &[Registration]) -> Vec<(&str, u64)> {
        l.iter()
            .map(|b| (b.contact.as_str(), b.expires_at))
            .collect()
    }

    #[test]
    fn register_refresh_and_remove_one_contact() {
        let mut b = Bindings::default();
        let one = Contacts::List(vec![contact("sip:1@h", None)]);
        let got = apply(&mut b, one.clone(), Some(120), "c", 1, 1000).unwrap();
        assert_eq!(uris(&got), [("sip:1@h", 1120)]);
        // A refresh (same Call-ID, higher CSeq) replaces it; default expiry applies.
        let got = apply(&mut b, one.clone(), None, "c", 2, 1100).unwrap();
        assert_eq!(uris(&got), [("sip:1@h", 2900)]);
        // The contact's own expires wins over the header; above max it is cut.
        let got = apply(
            &mut b,
            Contacts::List(vec![contact("SIP:1@H", Some(99_999))]),
            Some(120),
            "c",
            3,
            1100,
        )
        .unwrap();
        assert_eq!(uris(&got), [("SIP:1@H", 4700)]);

        let got = apply(&mut b, one, Some(0), "c", 4, 1200).unwrap();
        assert!(got.is_empty());
        assert!(b.current(&key(), 1200).is_empty());
    }

    #[test]
    fn a_contact_is_the_same_binding_by_rfc3261_uri_equivalence() {
        let mut b = Bindings::default();
        let list = |uri: &str| Contacts::List(vec![contact(uri, None)]);
        apply(&mut b, list("sip:1@h;transport=udp;ob"), None, "c", 1, 0).unwrap();
        // Parameters reordered, host and parameter value in another case: a refresh.
        let got = apply(&mut b, list("sip:1@H;ob;transport=UDP"), None, "c", 2, 0).unwrap();
        assert_eq!(uris(&got), [("sip:1@H;ob;transport=UDP", 1800)]);
        // A port written out (even the default one) is another contact.
        let got = apply(
            &mut b,
            list("sip:1@h:5060;transport=udp;ob"),
            None,
            "c",
            3,
            0,
        )
        .unwrap();
        assert_eq!(got.len(), 2, "{:?}", uris(&got));
    }

    #[test]
    fn too_brief_is_refused_whole_and_zero_is_not_too_brief() {
        let mut b = Bindings::default();
        let two = Contacts::List(vec![
            contact("sip:1@h", Some(3600)),
            contact("sip:2@h", Some(30)),
        ]);
        assert_eq!(
            apply(&mut b, two, None, "c", 1, 0).unwrap_err(),
            BindingError::IntervalTooBrief { min: 60 }
        );
        assert!(b.all(0).is_empty(), "nothing of a refused REGISTER is kept");
        let gone = Contacts::List(vec![contact("sip:1@h", Some(0))]);
        assert!(apply(&mut b, gone, None, "c", 2, 0).unwrap().is_empty());
    }

    #[test]
    fn two_phones_and_star_removes_all() {
        let mut b = Bindings::default();
        apply(
            &mut b,
            Contacts::List(vec![contact("sip:desk@h", None)]),
            None,
            "desk",
            1,
            0,
        )
        .unwrap();
        let got = apply(
            &mut b,
            Contacts::List(vec![contact("sip:soft@h", None)]),
            None,
            "soft",
            1,
            0,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            apply(&mut b, Contacts::Star, Some(60), "x", 1, 0).unwrap_err(),
            BindingError::StarNeedsZero
        );
        // The desk phone's own Call-ID with an old CSeq is out of order.
        assert_eq!(
            apply(&mut b, Contacts::Star, Some(0), "desk", 1, 0).unwrap_err(),
            BindingError::OutOfOrder
        );
        assert!(apply(&mut b, Contacts::Star, Some(0), "other", 1, 0)
            .unwrap()
            .is_empty());
        assert!(b.all(0).is_empty());
    }

    #[test]
    fn a_third_contact_replaces_the_one_expiring_first() {
        let mut b = Bindings::default();
        apply(
            &mut b,
            Contacts::List(vec![contact("sip:1@h", Some(100))]),
            None,
            "1",
            1,
            0,
        )
        .unwrap();
        apply(
            &mut b,
            Contacts::List(vec![contact("sip:2@h", Some(200))]),
            None,
            "2",
            1,
            0,
        )
        .unwrap();
        let got = apply(
            &mut b,
            Contacts::List(vec![contact("sip:3@h", Some(300))]),
            None,
            "3",
            1,
            0,
        )
        .unwrap();
        assert_eq!(uris(&got), [("sip:2@h", 200), ("sip:3@h", 300)]);
    }

    #[test]
    fn bindings_expire_on_their_own() {
        let mut b = Bindings::default();
        apply(
            &mut b,
            Contacts::List(vec![contact("sip:1@h", Some(100))]),
            None,
            "1",
            1,
            0,
        )
        .unwrap();
        apply(
            &mut b,
            Contacts::List(vec![contact("sip:2@h", Some(200))]),
            None,
            "2",
            1,
            0,
        )
        .unwrap();
        assert_eq!(b.current(&key(), 150).len(), 1);
        assert_eq!(b.sweep(150), 1);
        assert_eq!(b.sweep(250), 1);
        assert!(b.all(0).is_empty());
    }
}
