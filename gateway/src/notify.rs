//! Notifications as clients and backends see them: the `Notification`
//! frame (live, and in pages), the `NotificationsPage` frame, and the JSON
//! of the HTTP routes. The storage service keeps them
//! ([`NotificationRecord`]); this module only converts and bounds.

use base64::Engine as _;
use bytes::Bytes;
use herald_protocol::wire::{self, BodyT};
use herald_protocol::with_encoder;
use herald_storage::{NotificationPage, NotificationRecord};
use serde_json::{Value, json};

/// Most notifications one page holds, whatever the request asks for.
pub(crate) const MAX_PAGE: usize = 100;
/// Most ids one mark-read request may list.
pub(crate) const MAX_MARK_IDS: usize = 1_000;

/// A notification's bytes on the wire, roughly: what a page's budget
/// counts.
fn size(r: &NotificationRecord) -> usize {
    64 + r.kind.len() + r.title.len() + r.body.len() + r.data.len()
}

/// The newest part of `page` whose notifications fit in `budget` bytes (at
/// least one): a page must never be what closes a session as a slow
/// consumer. What is cut is still there (`has_more`), on the next page.
pub(crate) fn fit(mut page: NotificationPage, budget: usize) -> NotificationPage {
    let mut used = 0;
    let keep = page
        .items
        .iter()
        .position(|r| {
            used += size(r);
            used > budget
        })
        .map_or(page.items.len(), |i| i.max(1));
    if keep < page.items.len() {
        page.items.truncate(keep);
        page.has_more = true;
    }
    page
}

fn frame_of(r: &NotificationRecord) -> wire::NotificationT {
    let mut n = wire::NotificationT::default();
    n.id = r.id;
    n.kind = Some(r.kind.clone());
    n.title = Some(r.title.clone());
    n.body = Some(r.body.clone());
    n.data = (!r.data.is_empty()).then(|| r.data.to_vec());
    n.created_ms = r.created_ms;
    n.read = r.read;
    n
}

/// The live `Notification` frame of a stored notification (request id 0).
pub(crate) fn live_frame(r: &NotificationRecord) -> Bytes {
    with_encoder(|e| e.body(0, BodyT::Notification(Box::new(frame_of(r)))))
}

/// A `NotificationsPage` answering request `request_id`.
pub(crate) fn page_frame(request_id: u32, page: &NotificationPage) -> Bytes {
    let mut p = wire::NotificationsPageT::default();
    p.notifications = Some(page.items.iter().map(frame_of).collect());
    p.unread = page.unread;
    p.has_more = page.has_more;
    with_encoder(|e| e.body(request_id, BodyT::NotificationsPage(Box::new(p))))
}

/// The page a session gets unasked once connected: request id 0, no
/// notifications, the user's unread count.
pub(crate) fn unread_frame(unread: u64) -> Bytes {
    let mut p = wire::NotificationsPageT::default();
    p.unread = unread;
    with_encoder(|e| e.body(0, BodyT::NotificationsPage(Box::new(p))))
}

/// One notification as the HTTP API shows it: `data` as text when it is
/// UTF-8 (the JSON text `POST /api/notify` stored), `data_b64` otherwise,
/// `null` when there is none.
fn record_json(r: &NotificationRecord) -> Value {
    let mut v = json!({
        "id": r.id,
        "kind": r.kind,
        "title": r.title,
        "body": r.body,
        "data": null,
        "created_ms": r.created_ms,
        "read": r.read,
    });
    if !r.data.is_empty() {
        match std::str::from_utf8(&r.data) {
            Ok(text) => v["data"] = json!(text),
            Err(_) => {
                v["data_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(&r.data));
            }
        }
    }
    v
}

/// `GET /api/notifications/{user}`'s answer.
pub(crate) fn page_json(page: &NotificationPage) -> Value {
    json!({
        "notifications": page.items.iter().map(record_json).collect::<Vec<_>>(),
        "unread": page.unread,
        "has_more": page.has_more,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn record(id: u64, body: &str, data: &[u8]) -> NotificationRecord {
        NotificationRecord {
            id,
            user: Arc::from("ann"),
            kind: "k".into(),
            title: "t".into(),
            body: body.into(),
            data: Bytes::copy_from_slice(data),
            created_ms: 5,
            read: false,
        }
    }

    #[test]
    fn a_page_is_cut_to_its_budget_but_keeps_at_least_one() {
        let big = "x".repeat(1000);
        let page = NotificationPage {
            items: (0..5).rev().map(|i| record(i, &big, b"")).collect(),
            unread: 5,
            has_more: false,
        };
        let cut = fit(page.clone(), 2500);
        assert_eq!(cut.items.iter().map(|r| r.id).collect::<Vec<_>>(), [4, 3]);
        assert!(cut.has_more);
        let one = fit(page.clone(), 10);
        assert_eq!(one.items.len(), 1, "never empty while there is one");
        assert!(one.has_more);
        assert_eq!(fit(page.clone(), 1 << 20), page, "untouched when it fits");
    }

    #[test]
    fn data_is_text_when_utf8_and_base64_otherwise() {
        let text = record_json(&record(1, "b", br#"{"room":"chat:x"}"#));
        assert_eq!(text["data"], json!(r#"{"room":"chat:x"}"#));
        assert!(text.get("data_b64").is_none());
        let bin = record_json(&record(2, "b", &[0xff, 0x00]));
        assert_eq!(bin["data_b64"], json!("/wA="));
        assert_eq!(bin["data"], Value::Null);
        assert_eq!(record_json(&record(3, "b", b""))["data"], Value::Null);
    }

    #[test]
    fn frames_decode_to_what_was_stored() {
        let f = page_frame(
            9,
            &NotificationPage {
                items: vec![record(7, "hello", b"d")],
                unread: 3,
                has_more: true,
            },
        );
        let frame = herald_protocol::decode(&f, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT).unwrap();
        assert_eq!(frame.request_id(), 9);
        let BodyT::NotificationsPage(p) = frame.unpack().body else {
            panic!("a page")
        };
        assert_eq!((p.unread, p.has_more), (3, true));
        let n = &p.notifications.as_ref().unwrap()[0];
        assert_eq!(
            (n.id, n.body.as_deref(), n.data.as_deref()),
            (7, Some("hello"), Some(&b"d"[..]))
        );
        let unread = unread_frame(4);
        let u = herald_protocol::decode(&unread, &herald_protocol::DecodeLimits::SERVER_TO_CLIENT).unwrap();
        assert_eq!(u.request_id(), 0);
        let BodyT::NotificationsPage(p) = u.unpack().body else {
            panic!("a page")
        };
        assert_eq!((p.unread, p.notifications.map_or(0, |n| n.len())), (4, 0));
    }
}
