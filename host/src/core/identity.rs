//! A flow's proven identity, enforced on what it sends (a WebSocket listener with
//! `identity = "enforce"`): the plugin that upgraded the connection said who the user
//! is (the `user` attribute, and `domain` when it names one), and from then on every
//! REGISTER on the flow must be for that user's address-of-record and every new
//! request must come From that user. Anything else gets 403 before the routing plugin
//! is asked: a browser logged in as alice cannot register as bob, nor call as him.
//!
//! Requests inside one of our dialogs are not checked (the core tells them by our
//! signed Record-Route entry, `Core::in_our_dialog`): their From is whatever the
//! dialog's parties agreed (a callee's From is the original To, which retargeting may
//! have changed), and that signed entry already binds them to their dialog. A To tag
//! alone proves nothing: such a request is checked as a new one.

use super::Myself;
use crate::sip::message::{Essentials as _, Method, Request};
use crate::sip::uri::Uri;

/// Who a flow belongs to, as the core compares it: the user part canonical (escapes
/// resolved as RFC 3261 19.1.4 compares them), the domain lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    user: String,
    domain: Option<String>,
}

/// Why a request does not fit its flow's identity (the Warning text of its 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// A REGISTER whose To is another address-of-record.
    To,
    /// A new request whose From is another user.
    From,
}

impl Mismatch {
    /// The Warning's text.
    pub fn describe(self) -> &'static str {
        match self {
            Self::To => "To Is Not This Connection's User",
            Self::From => "From Is Not This Connection's User",
        }
    }
}

impl Identity {
    /// The identity a plugin attached at upgrade: its `user` attribute (required) and
    /// `domain` (optional: without it, any of our domains). `None` without a usable
    /// `user`.
    pub fn from_attributes(attributes: &[(String, String)]) -> Option<Self> {
        let get = |key: &str| {
            attributes
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let user = get("user").filter(|u| !u.is_empty())?;
        Some(Self {
            user: escaped(user),
            domain: get("domain")
                .filter(|d| !d.is_empty())
                .map(str::to_ascii_lowercase),
        })
    }

    /// The user, canonical.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether `uri` is this identity's address: a SIP or SIPS URI with its user, and
    /// its domain when the identity names one, else one of ours (`myself`): alice of
    /// one of our domains is not alice of another, nor of anywhere else.
    fn is(&self, uri: &Uri, myself: &Myself) -> bool {
        let Some(aor) = super::registrar::aor_of(uri) else {
            return false;
        };
        // `sip:` + canonical user + `@` + lower-cased host.
        let Some((user, host)) = aor["sip:".len()..].rsplit_once('@') else {
            return false;
        };
        user == self.user
            && match self.domain.as_deref() {
                Some(d) => d == host,
                None => uri.as_sip().is_some_and(|u| myself.is_my_host(u)),
            }
    }

    /// What is wrong with `req`, a request outside our dialogs on a flow of this
    /// identity, if anything. A request whose From or To does not parse passes (the
    /// core answers it 400 as for any flow).
    pub fn check(&self, req: &Request, myself: &Myself) -> Result<(), Mismatch> {
        if req.method == Method::Register
            && let Ok(to) = req.get_to()
            && !self.is(&to.uri, myself)
        {
            return Err(Mismatch::To);
        }
        match req.get_from() {
            Ok(from) if !self.is(&from.uri, myself) => Err(Mismatch::From),
            _ => Ok(()),
        }
    }
}

/// A user name as the canonical user part of a URI writes it
/// ([`crate::sip::uri::push_canonical_user`]): what a user part may hold as is stays,
/// every other byte (a `%` too: the attribute is a name, not URI text) escaped.
fn escaped(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for &b in user.as_bytes() {
        if crate::sip::uri::is_user_char(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    fn request(method: &str, from: &str, to: &str) -> Request {
        let text = format!(
            "{method} sip:x@example.com SIP/2.0\r\n\
             Via: SIP/2.0/WS a.invalid;branch=z9hG4bK1\r\n\
             From: {from}\r\nTo: {to}\r\nCall-ID: c\r\nCSeq: 1 {method}\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        match crate::sip::parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    /// Our domains in these tests.
    fn ours() -> Myself {
        Myself::new(&["example.com".to_string()], &[])
    }

    fn alice(domain: Option<&str>) -> Identity {
        let mut attrs = vec![("user".to_string(), "alice".to_string())];
        if let Some(d) = domain {
            attrs.push(("domain".into(), d.into()));
        }
        Identity::from_attributes(&attrs).unwrap()
    }

    #[test]
    fn register_for_own_aor_passes_and_for_another_is_refused() {
        let id = alice(None);
        let own = request(
            "REGISTER",
            "<sip:alice@example.com>;tag=1",
            "<sip:alice@example.com>",
        );
        assert_eq!(id.check(&own, &ours()), Ok(()));
        let other = request(
            "REGISTER",
            "<sip:alice@example.com>;tag=1",
            "<sip:bob@example.com>",
        );
        assert_eq!(id.check(&other, &ours()), Err(Mismatch::To));
        // A third-party registration from another user is refused by its From.
        let third = request(
            "REGISTER",
            "<sip:bob@example.com>;tag=1",
            "<sip:alice@example.com>",
        );
        assert_eq!(id.check(&third, &ours()), Err(Mismatch::From));
    }

    #[test]
    fn user_parts_compare_as_rfc_3261_says() {
        let id = alice(None);
        // Escapes resolved; sips folded to sip; the host's case ignored.
        let escaped = request(
            "MESSAGE",
            "<sips:%61lice@EXAMPLE.com>;tag=1",
            "<sip:bob@example.com>",
        );
        assert_eq!(id.check(&escaped, &ours()), Ok(()));
        // The user part is case-sensitive.
        let upper = request(
            "MESSAGE",
            "<sip:Alice@example.com>;tag=1",
            "<sip:bob@example.com>",
        );
        assert_eq!(id.check(&upper, &ours()), Err(Mismatch::From));
        // No user part, or not a SIP URI: not alice.
        let bare = request(
            "MESSAGE",
            "<sip:example.com>;tag=1",
            "<sip:bob@example.com>",
        );
        assert_eq!(id.check(&bare, &ours()), Err(Mismatch::From));
        let tel = request("MESSAGE", "<tel:+15551234>;tag=1", "<sip:bob@example.com>");
        assert_eq!(id.check(&tel, &ours()), Err(Mismatch::From));
    }

    #[test]
    fn a_domain_attribute_binds_the_host_too() {
        let id = alice(Some("Example.COM"));
        let ok = request(
            "INVITE",
            "<sip:alice@example.com>;tag=1",
            "<sip:bob@example.com>",
        );
        assert_eq!(id.check(&ok, &ours()), Ok(()));
        let elsewhere = request(
            "INVITE",
            "<sip:alice@other.org>;tag=1",
            "<sip:bob@example.com>",
        );
        assert_eq!(id.check(&elsewhere, &ours()), Err(Mismatch::From));
    }

    #[test]
    fn without_a_domain_attribute_only_our_domains_are_the_users() {
        let id = alice(None);
        let two = Myself::new(&["example.com".into(), "example.net".into()], &[]);
        let ours = request(
            "MESSAGE",
            "<sip:alice@example.net>;tag=1",
            "<sip:bob@example.com>",
        );
        assert_eq!(id.check(&ours, &two), Ok(()));
        // Anywhere else is not this alice.
        let theirs = request(
            "MESSAGE",
            "<sip:alice@other.org>;tag=1",
            "<sip:bob@example.com>",
        );
        assert_eq!(id.check(&theirs, &two), Err(Mismatch::From));
        let reg = request(
            "REGISTER",
            "<sip:alice@other.org>;tag=1",
            "<sip:alice@other.org>",
        );
        assert_eq!(id.check(&reg, &two), Err(Mismatch::To));
    }

    #[test]
    fn a_to_tag_alone_does_not_exempt_a_request() {
        let id = alice(None);
        // Whether a request is inside one of our dialogs is the core's to say (by its
        // signed Route entry); here it is checked as any request outside them.
        let forged = request(
            "MESSAGE",
            "<sip:bob@example.com>;tag=2",
            "<sip:carol@example.com>;tag=1",
        );
        assert_eq!(id.check(&forged, &ours()), Err(Mismatch::From));
    }

    #[test]
    fn no_user_attribute_no_identity() {
        assert_eq!(Identity::from_attributes(&[]), None);
        assert_eq!(
            Identity::from_attributes(&[("origin".into(), "https://a".into())]),
            None
        );
        assert_eq!(
            Identity::from_attributes(&[("user".into(), String::new())]),
            None
        );
        // A user with characters a URI escapes compares with its escaped form.
        let spaced = Identity::from_attributes(&[("user".into(), "a b%".into())]).unwrap();
        assert_eq!(spaced.user(), "a%20b%25");
        let req = request(
            "MESSAGE",
            "<sip:a%20b%25@example.com>;tag=1",
            "<sip:x@example.com>",
        );
        assert_eq!(spaced.check(&req, &ours()), Ok(()));
    }
}
