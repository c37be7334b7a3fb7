//! The client side of the notification inbox: the unread count the server
//! sends unasked after `Connected` (a `NotificationsPage` with request id 0)
//! is an event and a kept value, and a page that answers a query is the
//! query's answer (and updates the kept count too).

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::time::Instant;

use bytes::Bytes;
use herald_protocol::wire::{self, BodyT};
use herald_protocol::{ClientConfig, ClientEvent, ClientSession, with_encoder};

fn frame(request_id: u32, body: BodyT) -> Bytes {
    with_encoder(|e| e.body(request_id, body))
}

fn page(unread: u64, ids: &[u64]) -> BodyT {
    let notifications = ids
        .iter()
        .map(|&id| {
            let mut n = wire::NotificationT::default();
            n.id = id;
            n
        })
        .collect();
    let mut p = wire::NotificationsPageT::default();
    p.notifications = Some(notifications);
    p.unread = unread;
    BodyT::NotificationsPage(Box::new(p))
}

fn open_session(now: Instant) -> ClientSession {
    let mut client = ClientSession::new(
        ClientConfig {
            token: "ann".into(),
            ..ClientConfig::default()
        },
        now,
    );
    client.connect(now);
    while client.poll_transmit().is_some() {}
    let mut connected = wire::ConnectedT::default();
    connected.user_id = Some("ann".into());
    client
        .handle_frame(now, frame(1, BodyT::Connected(Box::new(connected))))
        .unwrap();
    assert!(matches!(client.poll_event(), Some(ClientEvent::Connected { .. })));
    client
}

#[test]
fn the_unread_count_after_connected_is_an_event_and_kept() {
    let now = Instant::now();
    let mut client = open_session(now);
    assert_eq!(client.unread(), None, "not told yet");
    client.handle_frame(now, frame(0, page(3, &[]))).unwrap();
    assert_eq!(client.poll_event(), Some(ClientEvent::Unread { unread: 3 }));
    assert_eq!(client.unread(), Some(3));
}

#[test]
fn a_page_answering_a_query_is_its_answer_and_updates_the_count() {
    let now = Instant::now();
    let mut client = open_session(now);
    let query = BodyT::NotificationsQuery(Box::default());
    let id = client.request(now, query).unwrap();
    assert_eq!(client.pending_requests(), 1);
    client.handle_frame(now, frame(id, page(1, &[7]))).unwrap();
    match client.poll_event() {
        Some(ClientEvent::Frame {
            request_id,
            body: BodyT::NotificationsPage(p),
        }) => {
            assert_eq!(request_id, id);
            assert_eq!(p.notifications.unwrap()[0].id, 7);
        }
        other => panic!("expected the page, got {other:?}"),
    }
    assert_eq!(client.pending_requests(), 0, "answered");
    assert_eq!(client.unread(), Some(1));
    assert_eq!(client.poll_event(), None, "no Unread event for an answer");
}
