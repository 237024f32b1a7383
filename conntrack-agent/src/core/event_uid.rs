//! The uid an event carries ([`crate::core::events::ConnInfo`]): the tracker's compact
//! [`Uid`], written out only when a capability asks for the text. Most events reach
//! capabilities that never look at the uid (an alert rule that matches nothing, a removal hook
//! that runs once at the end): the text for each of them was an allocation and a base62
//! rendering per event, several per connection.

use crate::core::uid::Uid;
use std::cell::OnceCell;

#[derive(Debug, Clone, Default)]
pub struct EventUid {
    /// None: the connection has no uid (an event the tracker does not know); its text is "".
    uid: Option<Uid>,
    text: OnceCell<String>,
}

impl EventUid {
    pub fn new(uid: Option<Uid>) -> Self {
        Self {
            uid,
            text: OnceCell::new(),
        }
    }

    /// A uid known only as text (a poll keeps its connection's).
    pub fn from_text(text: String) -> Self {
        Self {
            uid: None,
            text: OnceCell::from(text),
        }
    }

    /// The uid as conn.log writes it.
    pub fn as_str(&self) -> &str {
        self.text.get_or_init(|| {
            let mut s = String::with_capacity(24);
            self.render_into(&mut s);
            s
        })
    }

    /// Appends the uid's text to `out` without keeping it: for a caller that writes it once
    /// (removal.log), keeping it would be an allocation per connection.
    pub fn push_to(&self, out: &mut String) {
        match self.text.get() {
            Some(t) => out.push_str(t),
            None => self.render_into(out),
        }
    }

    /// [`EventUid::push_to`] of a byte buffer (removal.log builds its lines as bytes): a
    /// random uid's digits go straight into `out`.
    pub fn push_bytes_to(&self, out: &mut Vec<u8>) {
        match (self.text.get(), &self.uid) {
            (Some(t), _) => out.extend_from_slice(t.as_bytes()),
            (None, Some(Uid::Random { hi, lo })) => push_random_uid(out, *hi, *lo),
            (None, Some(given)) => out.extend_from_slice(given.render().as_bytes()),
            (None, None) => {}
        }
    }

    fn render_into(&self, out: &mut String) {
        match &self.uid {
            Some(Uid::Random { hi, lo }) => crate::logs::conn_tsv::push_uid(out, *hi, *lo),
            Some(given) => out.push_str(&given.render()),
            None => {}
        }
    }

    /// The same uid (compares the values when both have one, else the text).
    pub fn same(&self, other: &EventUid) -> bool {
        match (&self.uid, &other.uid) {
            (Some(a), Some(b)) => a == b,
            _ => self.as_str() == other.as_str(),
        }
    }
}

/// A random uid as [`Uid::render`] spells it (`C`, then the base62 of `hi` and of `lo`, each
/// without leading zeros), appended to `out`.
pub fn push_random_uid(out: &mut Vec<u8>, hi: u32, lo: u64) {
    out.push(b'C');
    for v in [u64::from(hi), lo] {
        let (digits, n) = crate::logs::conn_tsv::base62_digits(v);
        out.extend_from_slice(&digits[n..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::uid::UidGen;

    #[test]
    fn renders_like_the_uid_once_and_none_as_empty() {
        let uid = UidGen::seeded(7).next_uid();
        let e = EventUid::new(Some(uid.clone()));
        assert_eq!(e.as_str(), uid.render());
        assert!(std::ptr::eq(e.as_str(), e.as_str()), "rendered once");
        assert_eq!(EventUid::new(None).as_str(), "");
        assert_eq!(EventUid::default().as_str(), "");
        assert_eq!(EventUid::from_text("C1".into()).as_str(), "C1");
    }

    #[test]
    fn pushed_text_is_the_rendered_uid() {
        let mut g = UidGen::seeded(11);
        let mut uids: Vec<Uid> = (0..1000).map(|_| g.next_uid()).collect();
        uids.extend([
            Uid::Random { hi: 0, lo: 0 },
            Uid::Random {
                hi: u32::MAX,
                lo: u64::MAX,
            },
            Uid::from("CgivenText1".to_string()),
        ]);
        for uid in uids {
            let mut out = String::from("x");
            EventUid::new(Some(uid.clone())).push_to(&mut out);
            assert_eq!(out, format!("x{}", uid.render()));
            let e = EventUid::new(Some(uid.clone()));
            assert_eq!(e.as_str(), uid.render());
            let mut out = String::new();
            e.push_to(&mut out);
            assert_eq!(out, uid.render(), "from the kept text");
        }
        let mut out = String::new();
        EventUid::new(None).push_to(&mut out);
        EventUid::from_text("C2".into()).push_to(&mut out);
        assert_eq!(out, "C2");
    }

    #[test]
    fn uid_bytes_are_the_rendered_uid() {
        let mut g = UidGen::seeded(3);
        let mut uids: Vec<Uid> = (0..20_000).map(|_| g.next_uid()).collect();
        // Every digit count of each word, and the edges of the pairs.
        for d in 0..=11u32 {
            for v in [
                62u64.saturating_pow(d),
                62u64.saturating_pow(d).wrapping_sub(1),
            ] {
                uids.push(Uid::Random {
                    hi: v as u32,
                    lo: v,
                });
                uids.push(Uid::Random {
                    hi: 61,
                    lo: v.wrapping_add(1),
                });
            }
        }
        uids.extend([
            Uid::Random { hi: 0, lo: 0 },
            Uid::Random {
                hi: u32::MAX,
                lo: u64::MAX,
            },
            Uid::from("CgivenText1".to_string()),
        ]);
        for uid in uids {
            let mut out = b"x".to_vec();
            let e = EventUid::new(Some(uid.clone()));
            e.push_bytes_to(&mut out);
            assert_eq!(out, format!("x{}", uid.render()).as_bytes());
            let mut out = Vec::new();
            let _ = e.as_str();
            e.push_bytes_to(&mut out);
            assert_eq!(out, uid.render().as_bytes(), "from the kept text");
        }
        let mut out = Vec::new();
        EventUid::new(None).push_bytes_to(&mut out);
        EventUid::from_text("C2".into()).push_bytes_to(&mut out);
        assert_eq!(out, b"C2");
    }

    #[test]
    fn same_compares_values_or_text() {
        let mut g = UidGen::seeded(7);
        let (a, b) = (g.next_uid(), g.next_uid());
        let ea = EventUid::new(Some(a.clone()));
        assert!(ea.same(&EventUid::new(Some(a.clone()))));
        assert!(!ea.same(&EventUid::new(Some(b))));
        assert!(ea.same(&EventUid::from_text(a.render())));
        assert!(!ea.same(&EventUid::new(None)));
        assert!(EventUid::new(None).same(&EventUid::from_text(String::new())));
    }
}
