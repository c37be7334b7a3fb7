//! Which browser origins may use the node, and the CORS answers that tell
//! browsers so. A request without `Origin` is not from a page (backends,
//! native clients, curl) and is not checked; a page's WebSocket upgrade, SSE
//! stream or server-API call carries its origin and must be allowed.

use std::borrow::Cow;

use crate::http::{RequestHead, Response};

/// Browser origins allowed to open WebSockets and SSE streams and to call
/// the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin (the development default on loopback; `*` in settings).
    Any,
    /// Pages served from the node's own host only (the production default).
    SameOrigin,
    /// These origins (`https://app.example.com`, scheme and host and port
    /// as browsers send them), and the node's own host.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request may proceed.
    pub(crate) fn allows(&self, head: &RequestHead<'_>) -> bool {
        let Some(origin) = head.origin else { return true };
        if same_origin(origin, head.host) {
            return true;
        }
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::SameOrigin => false,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }

    /// Header lines that let the page read the answer (none for a
    /// same-origin or non-browser request). `credentials`: the page may send
    /// cookies (an `EventSource` with `withCredentials`).
    pub(crate) fn cors_headers(&self, head: &RequestHead<'_>, credentials: bool) -> Vec<Cow<'static, str>> {
        let Some(origin) = head.origin else { return Vec::new() };
        if same_origin(origin, head.host) || !self.allows(head) {
            return Vec::new();
        }
        let mut lines: Vec<Cow<'static, str>> = vec![
            Cow::Owned(format!("Access-Control-Allow-Origin: {origin}")),
            Cow::Borrowed("Vary: Origin"),
        ];
        if credentials {
            lines.push(Cow::Borrowed("Access-Control-Allow-Credentials: true"));
        }
        lines
    }

    /// The answer to a CORS preflight (`OPTIONS` with
    /// `Access-Control-Request-Method`) for the API or SSE.
    pub(crate) fn preflight(&self, head: &RequestHead<'_>) -> Response {
        if !self.allows(head) {
            return refused();
        }
        Response::empty(204)
            .with_headers(self.cors_headers(head, true))
            .with_header("Access-Control-Allow-Methods: GET, POST, OPTIONS")
            .with_header("Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID")
            .with_header("Access-Control-Max-Age: 600")
    }
}

/// The answer to a page whose origin is not allowed.
pub(crate) fn refused() -> Response {
    Response::error(
        403,
        "forbidden_origin",
        "this origin may not use this node (see allowed_origins)",
    )
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request
/// was sent to (its `Host` header).
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn head(origin: Option<&str>) -> String {
        let mut req = String::from("GET /api/rooms HTTP/1.1\r\nHost: node.test:8080\r\n");
        if let Some(o) = origin {
            req.push_str(&format!("Origin: {o}\r\n"));
        }
        req.push_str("\r\n");
        req
    }

    fn allows(policy: &AllowedOrigins, origin: Option<&str>) -> bool {
        let req = head(origin);
        let h = parse_head(req.as_bytes()).unwrap().unwrap();
        policy.allows(&h)
    }

    #[test]
    fn pages_need_an_allowed_origin_and_other_clients_need_none() {
        let list = AllowedOrigins::List(vec!["https://app.example.com".into()]);
        for policy in [AllowedOrigins::Any, AllowedOrigins::SameOrigin, list.clone()] {
            assert!(allows(&policy, None), "no Origin: not a page");
            assert!(allows(&policy, Some("http://node.test:8080")), "same origin");
        }
        assert!(allows(&AllowedOrigins::Any, Some("https://evil.example")));
        assert!(!allows(&AllowedOrigins::SameOrigin, Some("https://evil.example")));
        assert!(allows(&list, Some("https://APP.example.com")));
        assert!(!allows(&list, Some("https://app.example.com.evil")));
        assert!(!allows(&list, Some("http://app.example.com")), "scheme counts");
    }

    #[test]
    fn cross_origin_answers_carry_cors_headers_and_preflights_are_answered() {
        let list = AllowedOrigins::List(vec!["https://app.example.com".into()]);
        let req = head(Some("https://app.example.com"));
        let h = parse_head(req.as_bytes()).unwrap().unwrap();
        let lines = list.cors_headers(&h, false);
        assert_eq!(lines[0], "Access-Control-Allow-Origin: https://app.example.com");
        let pre = list.preflight(&h);
        assert_eq!(pre.status, 204);
        let text = String::from_utf8(pre.encode(true)).unwrap();
        assert!(text.contains("Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID"));
        assert!(!text.contains("Content-Length"), "a 204 has no body length");
        let req = head(Some("https://evil.example"));
        let h = parse_head(req.as_bytes()).unwrap().unwrap();
        assert_eq!(list.preflight(&h).status, 403);
        assert!(list.cors_headers(&h, true).is_empty());
    }
}
