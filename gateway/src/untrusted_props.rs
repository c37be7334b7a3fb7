//! Property tests of the byte layers that read what peers send: any input
//! is answered with a value or a typed error, never a panic, and nothing
//! they keep grows past its limit.

use proptest::prelude::*;

use crate::link::{FrameAction, WsFraming};
use crate::{handshake, http, sse, statics, ws};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_bytes_parse_as_an_http_head_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
        match http::parse_head(&bytes) {
            Ok(Some(head)) => {
                prop_assert!(head.head_len <= bytes.len());
                prop_assert!(head.head_len <= http::MAX_HEAD_BYTES);
                // Whatever the head, the handshake decides without panicking.
                let _ = handshake::check(&head);
            }
            Ok(None) => prop_assert!(bytes.len() < http::MAX_HEAD_BYTES),
            Err(e) => prop_assert!(matches!(e.status(), 400 | 411 | 431)),
        }
    }

    #[test]
    fn heads_built_from_random_headers_never_panic(
        lines in proptest::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,40}"), 0..20),
        version in 0u8..2,
    ) {
        let mut req = format!("GET /ws HTTP/1.{version}\r\n");
        for (name, value) in &lines {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        if let Ok(Some(head)) = http::parse_head(req.as_bytes()) {
            let _ = handshake::check(&head);
        }
    }

    #[test]
    fn any_bytes_parse_as_a_websocket_head_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..16), max in 0usize..100_000) {
        match ws::parse_head(&bytes, max) {
            Ok(Some(head)) => {
                prop_assert!(head.payload_len <= max, "the length is checked before anything is buffered");
                prop_assert!(head.header_len <= 14);
            }
            Ok(None) => prop_assert!(bytes.len() < 14),
            Err(e) => prop_assert!(matches!(e.close_code(), 1002 | 1009)),
        }
    }

    #[test]
    fn any_frame_sequence_keeps_reassembly_within_its_limit(
        frames in proptest::collection::vec((any::<bool>(), 0u8..16, proptest::collection::vec(any::<u8>(), 0..300)), 0..40),
    ) {
        const MAX: usize = 1_000;
        let mut f = WsFraming::default();
        for (fin, op, payload) in &frames {
            match f.on_frame(*fin, *op, payload, MAX) {
                FrameAction::Message(m) => prop_assert!(m.len() <= MAX),
                FrameAction::Fail { code, .. } => {
                    prop_assert!(matches!(code, 1002 | 1003 | 1007 | 1009));
                    break;
                }
                FrameAction::Closed { code } => {
                    prop_assert!(ws::valid_close_code(code));
                    break;
                }
                FrameAction::None => {}
            }
            if let Some(p) = f.take_pong() {
                prop_assert!(p.len() <= 300);
            }
        }
    }

    #[test]
    fn any_sse_query_and_id_is_a_stream_or_a_400(
        query in "[ -~]{0,300}",
        last_id in "[0-9.,a-z]{0,80}",
        cookie in "[ -~]{0,80}",
    ) {
        let req = format!("GET /sse?{query} HTTP/1.1\r\nHost: h\r\nLast-Event-ID: {last_id}\r\nCookie: {cookie}\r\n\r\n");
        if let Ok(Some(head)) = http::parse_head(req.as_bytes()) {
            match sse::parse_request(&head, 8, 64) {
                Ok(r) => {
                    prop_assert!(r.rooms.len() <= 8 && (!r.rooms.is_empty() || r.notifications));
                    prop_assert!(r.resume.as_ref().is_none_or(|p| p.len() == r.rooms.len()));
                }
                Err(resp) => prop_assert_eq!(resp.status, 400),
            }
        }
    }

    #[test]
    fn no_app_path_leaves_the_static_directory(path in "[./a-z%0-9]{0,40}") {
        let dir = std::env::temp_dir().join("herald-props-static/site");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "in").unwrap();
        std::fs::write(dir.parent().unwrap().join("secret.txt"), "out").unwrap();
        let req = format!("GET /app/{path} HTTP/1.1\r\nHost: h\r\n\r\n");
        if let Ok(Some(head)) = http::parse_head(req.as_bytes()) {
            let resp = statics::serve(&dir, &head);
            prop_assert!(resp.body != b"out", "served a file outside: /app/{}", path);
            prop_assert!(matches!(resp.status, 200 | 404 | 413));
        }
    }
}
