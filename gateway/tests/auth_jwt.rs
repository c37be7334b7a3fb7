//! JWT authentication end to end: tokens signed with HS256, RS256 and EdDSA
//! against nodes configured for them, refusals with typed close codes, expiry
//! at Connect and while connected, room permissions from the claims, and the
//! `herald` binary's `token` and `serve` configuration checks.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use herald_gateway::auth::{MintRequest, Verifier, mint_hs256};
use herald_gateway::{AuthConfig, NodeConfig, NodeHandle, close_code};
use herald_protocol::tokio_client::{Client, ClientError, Events};
use herald_protocol::{ClientEvent, ErrorCode, PublishOptions, SubscribeOptions};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use support::*;

const SECRET: &[u8] = b"auth-jwt-test-secret-0123456789-abcdef";
const RSA_PRIVATE: &[u8] = include_bytes!("fixtures/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("fixtures/rsa_public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("fixtures/ed25519_private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("fixtures/ed25519_public.pem");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt_node(auth: AuthConfig) -> NodeHandle {
    node_with(NodeConfig { auth, ..api_config() })
}

fn hs_node() -> NodeHandle {
    jwt_node(AuthConfig::Hs256Secret(SECRET.to_vec()))
}

/// An HS256 token for `user` with `rooms` (subscribe and publish), issued at
/// `issued` and valid for `ttl`.
fn mint(user: &str, rooms: &[&str], ttl: Duration, issued: u64) -> String {
    let req = MintRequest {
        user: user.into(),
        rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
        ttl,
        admin: false,
    };
    mint_hs256(SECRET, &req, issued).unwrap()
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

/// Connects with the async client; returns the user id in `Connected`.
async fn connect(url: &str, token: &str) -> (Client, Events, String) {
    let (c, mut events) = client(url, token).await;
    let user = next_matching(&mut events, |ev| match ev {
        ClientEvent::Connected { user_id, .. } => Some(user_id),
        _ => None,
    })
    .await;
    (c, events, user)
}

fn is_code(err: &ClientError, want: ErrorCode) -> bool {
    matches!(err, ClientError::Server { code, .. } if *code == want)
}

/// A raw connection with `token` ends with this error code, the matching
/// close code and a non-empty reason; returns the reason.
async fn refused(url: &str, token: &str, want: ErrorCode) -> String {
    let end = ws_until_close(ws_hello(url, token).await).await;
    let (code, message) = end.error.clone().unwrap_or_else(|| panic!("no error frame: {end:?}"));
    assert_eq!(code, want, "{end:?}");
    assert!(!message.is_empty());
    assert_eq!(
        end.error_request_id,
        Some(1),
        "the error answers the Connect (request id 1)"
    );
    let (close, reason) = end.close.clone().unwrap_or_else(|| panic!("no close frame: {end:?}"));
    assert_eq!(close, close_code(want), "{end:?}");
    assert!(!reason.is_empty(), "the close frame says why");
    reason
}

#[tokio::test]
async fn valid_hs256_token_connects_as_its_subject() {
    let node = hs_node();
    let token = mint("ann", &["chat:*"], hour(), now());
    let (c, _events, user) = connect(&node.url(), &token).await;
    assert_eq!(user, "ann");
    // The session works.
    c.subscribe("chat:hello", SubscribeOptions::default()).await.unwrap();
    let p = c
        .publish("chat:hello", &b"hi"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 1);
    stop(node).await;
}

#[tokio::test]
async fn bad_signatures_development_and_garbage_tokens_fail_auth() {
    let node = hs_node();
    let url = node.url();
    let good = mint("ann", &["chat:*"], hour(), now());
    let other_secret = mint_hs256(
        b"another-secret-of-sufficient-length-42",
        &MintRequest {
            user: "ann".into(),
            rooms: vec!["*".into()],
            ttl: hour(),
            admin: false,
        },
        now(),
    )
    .unwrap();
    // Same header and claims, signature of another token.
    let (head_claims, _) = good.rsplit_once('.').unwrap();
    let (_, foreign_sig) = other_secret.rsplit_once('.').unwrap();
    let spliced = format!("{head_claims}.{foreign_sig}");
    // Claims changed after signing (ann grants herself every room).
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_claims = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
        b64.encode(claims.replace("chat:*", "*"))
    };
    parts[1] = &forged_claims;
    let forged = parts.join(".");

    for (what, token) in [
        ("signed with another secret", other_secret.as_str()),
        ("foreign signature", &spliced),
        ("claims changed after signing", &forged),
        ("development token", "ann"),
        ("garbage", "garbage.not-a.jwt"),
        ("empty", ""),
    ] {
        let reason = refused(&url, token, ErrorCode::AuthFailed).await;
        assert!(reason.contains("authentication failed"), "{what}: {reason}");
        let err = Client::connect(&url, options(token)).await.unwrap_err();
        assert!(is_code(&err, ErrorCode::AuthFailed), "{what}: {err:?}");
    }
    let reason = refused(&url, &spliced, ErrorCode::AuthFailed).await;
    assert!(reason.contains("signature"), "{reason}");
    // The good token still works on the same node.
    let (_c, _e, user) = connect(&url, &good).await;
    assert_eq!(user, "ann");
    stop(node).await;
}

#[tokio::test]
async fn expired_token_is_refused_with_token_expired() {
    let node = hs_node();
    // Expired an hour ago: well past the 30 s leeway.
    let token = mint("ann", &["chat:*"], Duration::from_secs(60), now() - 3600);
    let reason = refused(&node.url(), &token, ErrorCode::TokenExpired).await;
    assert!(reason.contains("expired"), "{reason}");
    let err = Client::connect(&node.url(), options(&token)).await.unwrap_err();
    assert!(is_code(&err, ErrorCode::TokenExpired), "{err:?}");
    assert_eq!(close_code(ErrorCode::TokenExpired), 4206);
}

#[tokio::test]
async fn token_expiring_while_connected_closes_the_connection() {
    let node = hs_node();
    // exp is 28 s in the past: with the 30 s leeway the token is valid for
    // about 2 more seconds.
    let issued = now() - 60;
    let token = mint("ann", &["chat:*"], Duration::from_secs(32), issued);
    let exp = issued + 32 + herald_gateway::auth::LEEWAY_SECS;
    let (ws, user) = ws_connected(&node.url(), &token).await;
    assert_eq!(user, "ann");
    let connected_at = now();
    let end = ws_until_close(ws).await;
    let closed_at = now();
    assert_eq!(
        end.error.as_ref().map(|e| e.0),
        Some(ErrorCode::TokenExpired),
        "{end:?}"
    );
    assert_eq!(end.close.as_ref().map(|c| c.0), Some(4206), "{end:?}");
    assert!(
        closed_at >= exp && closed_at <= exp + 2,
        "closed at {closed_at}, token expired at {exp} (connected at {connected_at})"
    );
}

#[tokio::test]
async fn room_permissions_follow_the_token() {
    let node = hs_node();
    let token = mint("ann", &["chat:*"], hour(), now());
    let (ann, mut events, _) = connect(&node.url(), &token).await;

    ann.subscribe("chat:x", SubscribeOptions::default()).await.unwrap();
    let p = ann
        .publish("chat:x", &b"ok"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 1);
    let d = next_matching(&mut events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!((d.publisher.as_str(), &d.payload[..]), ("ann", &b"ok"[..]));

    for room in ["dash:y", "game:1", "chat", "user:bob"] {
        let err = ann.subscribe(room, SubscribeOptions::default()).await.unwrap_err();
        assert!(is_code(&err, ErrorCode::Forbidden), "subscribe {room}: {err:?}");
    }
    for room in ["game:1", "dash:y", "lobby"] {
        let err = ann
            .publish(room, &b"no"[..], PublishOptions::default())
            .await
            .unwrap_err();
        assert!(is_code(&err, ErrorCode::Forbidden), "publish {room}: {err:?}");
    }
    // The refusals were not fatal: the same connection still works.
    let p = ann
        .publish("chat:x", &b"still"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 2);
    let (status, body) = http(node.addr, "GET", "/api/history/game:1", Some(API_KEY), None).await;
    assert_eq!(status, 404, "the refused publish created nothing: {body}");
    stop(node).await;
}

#[tokio::test]
async fn token_without_rooms_still_has_its_own_user_room() {
    let node = hs_node();
    let token = mint("bea", &[], hour(), now());
    let (bea, mut events, user) = connect(&node.url(), &token).await;
    assert_eq!(user, "bea");
    bea.subscribe("user:bea", SubscribeOptions::default()).await.unwrap();
    for room in ["chat:x", "user:ann"] {
        let err = bea.subscribe(room, SubscribeOptions::default()).await.unwrap_err();
        assert!(is_code(&err, ErrorCode::Forbidden), "subscribe {room}: {err:?}");
    }
    let err = bea
        .publish("chat:x", &b"no"[..], PublishOptions::default())
        .await
        .unwrap_err();
    assert!(is_code(&err, ErrorCode::Forbidden), "{err:?}");

    // Server messages to her room reach her.
    let body = serde_json::json!({"room": "user:bea", "data": "for bea"}).to_string();
    let (status, _) = http(node.addr, "POST", "/api/publish", Some(API_KEY), Some(&body)).await;
    assert_eq!(status, 200);
    let d = next_matching(&mut events, |ev| match ev {
        ClientEvent::Message(d) => Some(d),
        _ => None,
    })
    .await;
    assert_eq!((d.room.as_str(), &d.payload[..]), ("user:bea", &b"for bea"[..]));
    stop(node).await;
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    subscribe: &'a [&'a str],
    publish: &'a [&'a str],
}

fn sign(alg: Algorithm, key: &EncodingKey, user: &str) -> String {
    let claims = Claims {
        sub: user,
        exp: now() + 3600,
        subscribe: &["chat:*"],
        publish: &["chat:*"],
    };
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

#[tokio::test]
async fn rs256_and_eddsa_tokens_verify_with_their_public_keys() {
    let rsa_node = jwt_node(AuthConfig::PublicKeyPem(RSA_PUBLIC.to_vec()));
    let ed_node = jwt_node(AuthConfig::PublicKeyPem(ED_PUBLIC.to_vec()));
    let rs = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        "rita",
    );
    let ed = sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
        "eddie",
    );

    let (rita, _r, user) = connect(&rsa_node.url(), &rs).await;
    assert_eq!(user, "rita");
    rita.subscribe("chat:keys", SubscribeOptions::default()).await.unwrap();
    let (eddie, _e, user) = connect(&ed_node.url(), &ed).await;
    assert_eq!(user, "eddie");
    let p = eddie
        .publish("chat:keys", &b"signed"[..], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(p.offset, 1);

    // Each node accepts only its own algorithm, and never HS256.
    refused(&rsa_node.url(), &ed, ErrorCode::AuthFailed).await;
    refused(&ed_node.url(), &rs, ErrorCode::AuthFailed).await;
    let hs = mint("mallory", &["*"], hour(), now());
    refused(&rsa_node.url(), &hs, ErrorCode::AuthFailed).await;
    refused(&ed_node.url(), &hs, ErrorCode::AuthFailed).await;
    stop(rsa_node).await;
    stop(ed_node).await;
}

/// Runs the `herald` binary with a clean `HERALD_*` environment; bounded.
fn herald(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("run herald");
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().expect("wait for herald").is_some() {
            return child.wait_with_output().expect("herald output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("herald output");
            panic!(
                "herald {args:?} still running after {WAIT:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn herald_token_mints_a_token_the_node_verifies() {
    let secret = std::str::from_utf8(SECRET).unwrap();
    let out = herald(&[
        "token",
        "--user",
        "ann",
        "--rooms",
        "chat:*",
        "--ttl",
        "1h",
        "--jwt-secret",
        secret,
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {stdout:?}");
    let t = now();
    let id = Verifier::hs256(SECRET).unwrap().verify(token, t).unwrap();
    assert_eq!(id.user, "ann");
    assert_eq!(id.subscribe.iter().collect::<Vec<_>>(), ["chat:*"]);
    assert_eq!(id.publish.iter().collect::<Vec<_>>(), ["chat:*"]);
    assert!(id.may_subscribe("chat:x") && id.may_publish("chat:x"));
    assert!(!id.may_subscribe("dash:x") && !id.may_publish("dash:x"));
    let exp = id.expires_at.unwrap();
    assert!((t + 3600 - 5..=t + 3600 + 5).contains(&exp), "exp {exp}, now {t}");
    // Another secret does not verify it.
    assert!(
        Verifier::hs256(b"another-secret-of-sufficient-length-42")
            .unwrap()
            .verify(token, t)
            .is_err()
    );
}

#[test]
fn herald_serve_refuses_unsafe_or_invalid_configuration() {
    let out = herald(&["serve", "--listen", "0.0.0.0:0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("loopback"), "stderr: {stderr}");

    let out = herald(&["serve", "--shards", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
    assert!(stderr.contains("shards"), "stderr: {stderr}");

    // A missing or mistyped file: exit 64 and one line that names the file.
    let dir = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = 5\n").unwrap();
    let missing = dir.join("missing.toml");
    for file in [&bad, &missing] {
        let out = herald(&["serve", "--config", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "stderr: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        // figment may show the path relative to a parent directory.
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(stderr.contains(name), "names the file: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn token_within_the_expiry_leeway_stays_connected() {
    let node = hs_node();
    // exp was 10 s ago: still valid for 20 s by the documented 30 s leeway.
    let token = mint("ann", &["chat:*"], Duration::from_secs(60), now() - 70);
    let (mut ws, user) = ws_connected(&node.url(), &token).await;
    assert_eq!(user, "ann");
    // Several expiry ticks (100 ms each) pass; the connection must stay open.
    // Waiting is the point of this check: a close would come within a tick.
    let quiet = tokio::time::timeout(Duration::from_millis(600), ws_next_body(&mut ws)).await;
    assert!(quiet.is_err(), "closed or sent a frame within the leeway: {quiet:?}");
}
