//! Client authentication: the token a client sends in `Connect`.
//!
//! A [`Verifier`] turns a token into an [`Identity`] (a user id and the rooms
//! it may subscribe to and publish in), or an [`AuthError`] whose message is
//! short and safe to send back to the client. It is a pure function of the
//! token and of `now_unix_secs`: it never reads the wall clock, so tests and
//! replays are deterministic.
//!
//! # Modes
//!
//! - **Development** ([`Verifier::development`]): the token string *is* the
//!   user id (1-64 characters of `[A-Za-z0-9:_-.@/]`). The user may subscribe
//!   and publish everywhere (`*`), is not an admin, and never expires. Only
//!   for loopback development.
//! - **Signed JWT**: HS256 with a shared secret of at least 32 bytes
//!   ([`Verifier::hs256`]), RS256 with an RSA public key of at least 2048 bits
//!   or EdDSA with an Ed25519 public key ([`Verifier::public_key_pem`]). Only
//!   the one algorithm that matches the configured key is accepted, so a token
//!   cannot choose its own algorithm (`none`, or HS256 "signed" with a public
//!   key, are rejected).
//!
//! # Claims
//!
//! | claim | type | required | meaning |
//! |---|---|---|---|
//! | `sub` | string | yes | user id, 1-64 characters of `[A-Za-z0-9:_-.@/]` |
//! | `exp` | NumericDate | yes | expiry, unix seconds |
//! | `nbf` | NumericDate | no | not valid before, unix seconds |
//! | `iat` | NumericDate | no | issued at; informational, not checked |
//! | `subscribe` | array of patterns | no | rooms the user may subscribe to; absent = none |
//! | `publish` | array of patterns | no | rooms the user may publish in; absent = none |
//! | `admin` | bool | no | administrative operations; default `false`; grants no rooms by itself |
//! | `iss`, `aud` | string (`aud`: or array) | only if configured | see [`Verifier::with_issuer`], [`Verifier::with_audience`] |
//!
//! Other claims are ignored. A token that carries `aud` is rejected unless an
//! audience is configured and matches (RFC 7519, section 4.1.3).
//!
//! A *pattern* is an exact room name (`chat:lobby`) or a prefix ending in `*`
//! (`chat:*` matches `chat:x` and `chat:x:y` but not `chat`; `*` matches every
//! room). A pattern is at most 128 bytes of `[A-Za-z0-9:_-.@/]` plus the
//! trailing `*`; a list holds at most 64 patterns. Every user may always
//! subscribe to its own room `user:{sub}`.
//!
//! Time: a token is expired once `now >= exp + 30` and not yet valid while
//! `now + 30 < nbf`: 30 seconds of leeway absorb clock skew between the
//! issuer and the gateway. NumericDates may be integers or non-negative
//! decimals (the fraction is dropped).
//!
//! # Untrusted input
//!
//! Tokens longer than 4096 bytes are rejected before any parsing. The
//! signature is checked before the claims are read. No input panics.
//!
//! # Minting
//!
//! [`mint_hs256`] signs an HS256 token for the `herald token` development
//! command; its `rooms` go into both `subscribe` and `publish`.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Longest token accepted, in bytes; longer tokens are rejected unparsed.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest user id (`sub`, or a development token), in bytes.
pub const MAX_USER_BYTES: usize = 64;
/// Most patterns in one `subscribe` or `publish` list.
pub const MAX_PATTERNS: usize = 64;
/// Longest pattern, in bytes (including a trailing `*`).
pub const MAX_PATTERN_BYTES: usize = 128;
/// Clock-skew allowance applied to `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Shortest HS256 secret accepted, in bytes (the HMAC-SHA256 output size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// How tokens are checked. Built once from configuration; cheap to share.
pub struct Verifier {
    mode: Mode,
}

enum Mode {
    Development,
    Jwt(Box<Jwt>),
}

struct Jwt {
    key: DecodingKey,
    /// Signature, algorithm, `iss` and `aud` checks only: time checks are
    /// disabled here and done against the caller's `now`.
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material; the algorithm and expectations suffice.
        match &self.mode {
            Mode::Development => f.write_str("Verifier::Development"),
            Mode::Jwt(jwt) => f
                .debug_struct("Verifier::Jwt")
                .field("algorithms", &jwt.validation.algorithms)
                .field("issuer", &jwt.validation.iss)
                .field("audience", &jwt.validation.aud)
                .finish_non_exhaustive(),
        }
    }
}

impl Verifier {
    /// Accepts unsigned development tokens: the token is the user id, which
    /// may subscribe and publish everywhere, is not an admin and never
    /// expires. Never use it on a reachable address.
    pub fn development() -> Self {
        Self {
            mode: Mode::Development,
        }
    }

    /// Accepts HS256 tokens signed with `secret`, which must be at least
    /// [`MIN_HS256_SECRET_BYTES`] long.
    pub fn hs256(secret: &[u8]) -> Result<Self, AuthConfigError> {
        check_secret(secret)?;
        Ok(Self::jwt(DecodingKey::from_secret(secret), Algorithm::HS256))
    }

    /// Accepts tokens signed by the private half of a PEM public key: an RSA
    /// key of at least 2048 bits (`PUBLIC KEY` or `RSA PUBLIC KEY`) selects
    /// RS256, an Ed25519 key (`PUBLIC KEY`) selects EdDSA. Private keys and
    /// other key types are refused.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, AuthConfigError> {
        if pem.windows(b"PRIVATE KEY".len()).any(|w| w == b"PRIVATE KEY") {
            return Err(AuthConfigError::UnsupportedKey(
                "expected a public key, got a private key: give the gateway only the public half",
            ));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            // Parse the modulus now so a bad key fails at startup, not as a
            // "bad signature" on every Connect.
            let jwk = Jwk::from_decoding_key(&key, None).map_err(|e| AuthConfigError::Key(e.to_string()))?;
            let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
                return Err(AuthConfigError::Key("not an RSA public key".to_owned()));
            };
            // `n` is unpadded base64url of the big-endian modulus without
            // leading zeros; 4 characters carry 3 bytes.
            let bits = rsa.n.len() * 6 / 8 * 8;
            if bits < MIN_RSA_BITS {
                return Err(AuthConfigError::Key(format!(
                    "RSA key has about {bits} bits; at least {MIN_RSA_BITS} are required"
                )));
            }
            return Ok(Self::jwt(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            // Checks the length (jsonwebtoken slices the key unchecked) ...
            Jwk::from_decoding_key(&key, None).map_err(|e| AuthConfigError::Key(e.to_string()))?;
            // ... and that the bytes are a valid curve point: an invalid key
            // fails to build a verifier, a valid one just rejects the empty
            // signature.
            jsonwebtoken::crypto::verify("", b"", &key, Algorithm::EdDSA)
                .map_err(|e| AuthConfigError::Key(e.to_string()))?;
            return Ok(Self::jwt(key, Algorithm::EdDSA));
        }
        if DecodingKey::from_ec_pem(pem).is_ok() {
            return Err(AuthConfigError::UnsupportedKey(
                "EC (ES256/ES384) keys are not supported; use an RSA (2048+ bits) or Ed25519 public key",
            ));
        }
        Err(AuthConfigError::Key(
            "not a PEM-encoded RSA or Ed25519 public key".to_owned(),
        ))
    }

    fn jwt(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self {
            mode: Mode::Jwt(Box::new(Jwt { key, validation })),
        }
    }

    /// Requires signed tokens to carry `iss` equal to `issuer`. No effect in
    /// development mode.
    #[must_use]
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        if let Mode::Jwt(jwt) = &mut self.mode {
            jwt.validation.set_issuer(&[issuer]);
            jwt.validation.required_spec_claims.insert("iss".to_owned());
        }
        self
    }

    /// Requires signed tokens to carry `aud` equal to (or, for an array,
    /// containing) `audience`. Without it, tokens that carry any `aud` are
    /// rejected. No effect in development mode.
    #[must_use]
    pub fn with_audience(mut self, audience: &str) -> Self {
        if let Mode::Jwt(jwt) = &mut self.mode {
            jwt.validation.set_audience(&[audience]);
            jwt.validation.required_spec_claims.insert("aud".to_owned());
        }
        self
    }

    /// Whether this verifier accepts unsigned development tokens.
    pub fn is_development(&self) -> bool {
        matches!(self.mode, Mode::Development)
    }

    /// Checks `token` at time `now_unix_secs` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now_unix_secs: u64) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed("token too long"));
        }
        match &self.mode {
            Mode::Development => {
                if !valid_user(token) {
                    return Err(AuthError::InvalidSubject);
                }
                Ok(Identity {
                    user: token.to_owned(),
                    expires_at: None,
                    subscribe: RoomPatterns::all(),
                    publish: RoomPatterns::all(),
                    admin: false,
                })
            }
            Mode::Jwt(jwt) => jwt.verify(token, now_unix_secs),
        }
    }
}

impl Jwt {
    fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        // Read the header first so header and claim errors can be told apart
        // (a JSON error from `decode` below can then only be the claims).
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) => AuthError::Malformed("invalid header or unsupported algorithm"),
            _ => AuthError::Malformed("not a JWT"),
        })?;
        if !self.validation.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        // Verifies the signature before deserializing the claims.
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims;

        let user = claims.sub.ok_or(AuthError::MissingSubject)?;
        if !valid_user(&user) {
            return Err(AuthError::InvalidSubject);
        }
        let exp = claims.exp.ok_or(AuthError::MissingExpiry)?;
        if now >= exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.nbf
            && now.saturating_add(LEEWAY_SECS) < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        let subscribe =
            RoomPatterns::parse(claims.subscribe.as_deref().unwrap_or_default()).map_err(AuthError::Malformed)?;
        let publish =
            RoomPatterns::parse(claims.publish.as_deref().unwrap_or_default()).map_err(AuthError::Malformed)?;
        Ok(Identity {
            user,
            expires_at: Some(exp),
            subscribe,
            publish,
            admin: claims.admin,
        })
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::UnsupportedAlgorithm => {
            AuthError::AlgorithmNotAllowed
        }
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::WrongAudience,
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => AuthError::Malformed("not a JWT"),
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => AuthError::Malformed("invalid claims"),
        _ => AuthError::Unverifiable,
    }
}

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id: the token's `sub`, or the development token itself.
    pub user: String,
    /// When the token expires (its `exp`, unix seconds, without leeway);
    /// `None` for development tokens.
    pub expires_at: Option<u64>,
    /// Rooms the user may subscribe to (besides its own `user:{user}`).
    pub subscribe: RoomPatterns,
    /// Rooms the user may publish in.
    pub publish: RoomPatterns,
    /// Whether the user may use administrative operations. Grants no rooms.
    pub admin: bool,
}

impl Identity {
    /// Whether the user may subscribe to `room`: its own `user:{user}` room
    /// or any room matched by [`Identity::subscribe`].
    pub fn may_subscribe(&self, room: &str) -> bool {
        room.strip_prefix("user:") == Some(self.user.as_str()) || self.subscribe.matches(room)
    }

    /// Whether the user may publish in `room`.
    pub fn may_publish(&self, room: &str) -> bool {
        self.publish.matches(room)
    }
}

/// A list of room patterns: exact names, or prefixes ending in `*` (`*`
/// alone matches every room). Validated on construction: at most
/// [`MAX_PATTERNS`] patterns of at most [`MAX_PATTERN_BYTES`] bytes.
///
/// Shared (`Arc`): `all()` and `none()` cost an idle connection no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPatterns(Arc<[Box<str>]>);

impl Default for RoomPatterns {
    fn default() -> Self {
        static NONE: OnceLock<Arc<[Box<str>]>> = OnceLock::new();
        Self(NONE.get_or_init(|| Arc::from(Vec::new())).clone())
    }
}

impl RoomPatterns {
    /// Matches no room.
    pub fn none() -> Self {
        Self::default()
    }

    /// Matches every room (`*`).
    pub fn all() -> Self {
        static ALL: OnceLock<Arc<[Box<str>]>> = OnceLock::new();
        Self(ALL.get_or_init(|| Arc::from(vec![Box::<str>::from("*")])).clone())
    }

    /// Whether any pattern matches `room`.
    pub fn matches(&self, room: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => room == &**p,
        })
    }

    /// Whether the list is empty (matches no room).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns, as given.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|p| &**p)
    }

    fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, &'static str> {
        if patterns.len() > MAX_PATTERNS {
            return Err("too many room patterns");
        }
        patterns
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let name = p.strip_suffix('*').unwrap_or(p);
                let valid = p.len() <= MAX_PATTERN_BYTES
                    && (p == "*" || herald_protocol::valid_room_name(name, MAX_PATTERN_BYTES));
                if valid {
                    Ok(p.into())
                } else {
                    Err("invalid room pattern")
                }
            })
            .collect::<Result<Vec<Box<str>>, _>>()
            .map(|v| Self(Arc::from(v)))
    }
}

/// Why a token was refused. Messages are short, contain no key material and
/// do not echo the token: they may be sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a well-formed token (too long, bad encoding, claims of the wrong
    /// type, invalid room patterns).
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The token's algorithm is not the one this gateway accepts.
    #[error("token algorithm not accepted")]
    AlgorithmNotAllowed,
    /// The signature does not match.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// No `sub` claim.
    #[error("token has no subject (sub)")]
    MissingSubject,
    /// The user id (`sub`, or a development token) is not 1-64 characters of
    /// `[A-Za-z0-9:_-.@/]`.
    #[error("invalid user id: expected 1-64 characters of [A-Za-z0-9:_-.@/]")]
    InvalidSubject,
    /// No `exp` claim.
    #[error("token has no expiry (exp)")]
    MissingExpiry,
    /// `iss` is missing or not the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` is missing, not the configured audience, or present when no
    /// audience is configured.
    #[error("token audience not accepted")]
    WrongAudience,
    /// Verification failed for another reason.
    #[error("token could not be verified")]
    Unverifiable,
}

/// A configuration or minting error, for the operator (not for clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// The HS256 secret is too short to resist brute force.
    #[error("HS256 secret is {len} bytes; at least {min} are required (e.g. `openssl rand -base64 48`)")]
    SecretTooShort {
        /// Length of the secret given.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The key could not be parsed or is too weak.
    #[error("invalid public key: {0}")]
    Key(String),
    /// A well-formed key of a kind Herald does not accept.
    #[error("unsupported key: {0}")]
    UnsupportedKey(&'static str),
    /// A mint request that would produce an invalid token.
    #[error("cannot mint token: {0}")]
    Claims(&'static str),
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// What [`mint_hs256`] puts in a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// User id (`sub`): 1-64 characters of `[A-Za-z0-9:_-.@/]`.
    pub user: String,
    /// Room patterns, written to both `subscribe` and `publish`.
    pub rooms: Vec<String>,
    /// Lifetime: `exp = now + ttl` (whole seconds, at least one).
    pub ttl: Duration,
    /// The `admin` claim.
    pub admin: bool,
}

/// Signs an HS256 token for `claims`, issued at `now_unix_secs`. Refuses
/// anything [`Verifier::verify`] would reject, so a minted token verifies
/// with the same secret until it expires.
pub fn mint_hs256(secret: &[u8], claims: &MintRequest, now_unix_secs: u64) -> Result<String, AuthConfigError> {
    check_secret(secret)?;
    if !valid_user(&claims.user) {
        return Err(AuthConfigError::Claims(
            "user id must be 1-64 characters of [A-Za-z0-9:_-.@/]",
        ));
    }
    RoomPatterns::parse(&claims.rooms).map_err(AuthConfigError::Claims)?;
    let ttl = claims.ttl.as_secs();
    if ttl == 0 {
        return Err(AuthConfigError::Claims("ttl must be at least one second"));
    }
    let exp = now_unix_secs
        .checked_add(ttl)
        .ok_or(AuthConfigError::Claims("ttl too large"))?;
    let body = MintClaims {
        sub: &claims.user,
        iat: now_unix_secs,
        exp,
        subscribe: &claims.rooms,
        publish: &claims.rooms,
        admin: claims.admin,
    };
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, &EncodingKey::from_secret(secret))
        .map_err(|e| AuthConfigError::Signing(e.to_string()))?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthConfigError::Claims("token would exceed 4096 bytes"));
    }
    Ok(token)
}

fn check_secret(secret: &[u8]) -> Result<(), AuthConfigError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(AuthConfigError::SecretTooShort {
            len: secret.len(),
            min: MIN_HS256_SECRET_BYTES,
        });
    }
    Ok(())
}

fn valid_user(user: &str) -> bool {
    herald_protocol::valid_room_name(user, MAX_USER_BYTES)
}

/// Claims read from a signed token; unknown claims are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<u64>,
    // Parsed only so that a malformed `iat` is reported; not checked.
    #[serde(default, deserialize_with = "numeric_date")]
    #[expect(dead_code, reason = "validated, never read")]
    iat: Option<u64>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    admin: bool,
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    subscribe: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    publish: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    admin: bool,
}

/// A JWT NumericDate: non-negative seconds, integer or decimal (RFC 7519,
/// section 2); `null` counts as absent.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct NumericDate;

    impl Visitor<'_> for NumericDate {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("non-negative seconds since the Unix epoch")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v).map(Some).map_err(|_| E::custom("negative date"))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // `as` saturates; the range check keeps the result meaningful.
            if v.is_finite() && (0.0..u64::MAX as f64).contains(&v) {
                Ok(Some(v as u64))
            } else {
                Err(E::custom("date out of range"))
            }
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(NumericDate)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;
    const RSA_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/rsa_public.pem");
    const RSA_PUBLIC_PKCS1: &[u8] = include_bytes!("../tests/fixtures/rsa_public_pkcs1.pem");
    const RSA1024_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/rsa1024_public.pem");
    const ED_PRIVATE: &[u8] = include_bytes!("../tests/fixtures/ed25519_private.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/ed25519_public.pem");
    const EC_PUBLIC: &[u8] = include_bytes!("../tests/fixtures/ec_p256_public.pem");

    /// Claims as a test issuer writes them; `None` fields are left out.
    #[derive(Serialize, Default)]
    struct TestClaims {
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        exp: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        nbf: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subscribe: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        publish: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        aud: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        iss: Option<&'static str>,
    }

    fn alice(exp: u64) -> TestClaims {
        TestClaims {
            sub: Some("alice".into()),
            exp: Some(exp),
            ..TestClaims::default()
        }
    }

    fn sign(alg: Algorithm, key: &EncodingKey, claims: &TestClaims) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
    }

    fn hs(claims: &TestClaims) -> String {
        sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
    }

    fn hs_verifier() -> Verifier {
        Verifier::hs256(SECRET).unwrap()
    }

    #[test]
    fn hs256_accepts_valid_token() {
        let mut claims = alice(NOW + 60);
        claims.subscribe = Some(vec!["chat:*".into()]);
        claims.publish = Some(vec!["chat:lobby".into()]);
        let id = hs_verifier().verify(&hs(&claims), NOW).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.expires_at, Some(NOW + 60));
        assert!(!id.admin);
        assert!(id.may_subscribe("chat:x") && id.may_publish("chat:lobby"));
        assert!(!id.may_publish("chat:other"));
    }

    #[test]
    fn absent_room_claims_grant_only_own_room() {
        let id = hs_verifier().verify(&hs(&alice(NOW + 60)), NOW).unwrap();
        assert!(id.subscribe.is_empty() && id.publish.is_empty());
        assert!(id.may_subscribe("user:alice"));
        assert!(!id.may_subscribe("user:bob") && !id.may_publish("user:alice"));
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let other = EncodingKey::from_secret(b"another secret that is long enough!!");
        let token = sign(Algorithm::HS256, &other, &alice(NOW + 60));
        assert_eq!(hs_verifier().verify(&token, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_claims_are_rejected() {
        let token = hs(&alice(NOW + 60));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = hs(&TestClaims {
            sub: Some("mallory".into()),
            exp: Some(NOW + 60),
            ..TestClaims::default()
        });
        parts[1] = forged.split('.').nth(1).unwrap();
        assert_eq!(
            hs_verifier().verify(&parts.join("."), NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn expiry_has_thirty_seconds_of_leeway() {
        let v = hs_verifier();
        assert!(v.verify(&hs(&alice(NOW)), NOW).is_ok());
        assert!(v.verify(&hs(&alice(NOW - 29)), NOW).is_ok());
        assert_eq!(v.verify(&hs(&alice(NOW - 30)), NOW), Err(AuthError::Expired));
        assert_eq!(v.verify(&hs(&alice(NOW - 3600)), NOW), Err(AuthError::Expired));
        assert_eq!(v.verify(&hs(&alice(0)), NOW), Err(AuthError::Expired));
    }

    #[test]
    fn not_before_in_the_future_is_rejected() {
        let v = hs_verifier();
        let at = |nbf| {
            hs(&TestClaims {
                nbf: Some(nbf),
                ..alice(NOW + 3600)
            })
        };
        assert_eq!(v.verify(&at(NOW + 31), NOW), Err(AuthError::NotYetValid));
        assert!(v.verify(&at(NOW + 30), NOW).is_ok());
        assert!(v.verify(&at(NOW - 10), NOW).is_ok());
    }

    #[test]
    fn missing_or_invalid_subject_and_expiry_are_rejected() {
        let v = hs_verifier();
        let no_sub = TestClaims {
            exp: Some(NOW + 60),
            ..TestClaims::default()
        };
        assert_eq!(v.verify(&hs(&no_sub), NOW), Err(AuthError::MissingSubject));
        let no_exp = TestClaims {
            sub: Some("alice".into()),
            ..TestClaims::default()
        };
        assert_eq!(v.verify(&hs(&no_exp), NOW), Err(AuthError::MissingExpiry));
        for bad in ["", "has space", "é", &"x".repeat(65)] {
            let claims = TestClaims {
                sub: Some(bad.to_owned()),
                ..alice(NOW + 60)
            };
            assert_eq!(v.verify(&hs(&claims), NOW), Err(AuthError::InvalidSubject), "{bad:?}");
        }
    }

    #[test]
    fn claims_of_the_wrong_type_are_malformed() {
        #[derive(Serialize)]
        struct Odd {
            sub: &'static str,
            exp: &'static str,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Odd {
                sub: "alice",
                exp: "tomorrow",
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            hs_verifier().verify(&token, NOW),
            Err(AuthError::Malformed("invalid claims"))
        );
    }

    #[test]
    fn decimal_dates_are_accepted() {
        #[derive(Serialize)]
        struct Decimal {
            sub: &'static str,
            exp: f64,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Decimal {
                sub: "alice",
                exp: (NOW + 60) as f64 + 0.5,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(hs_verifier().verify(&token, NOW).unwrap().expires_at, Some(NOW + 60));
    }

    #[test]
    fn short_secrets_and_bad_keys_are_refused() {
        assert_eq!(
            Verifier::hs256(b"too short").unwrap_err(),
            AuthConfigError::SecretTooShort { len: 9, min: 32 }
        );
        assert!(matches!(
            Verifier::public_key_pem(RSA_PRIVATE),
            Err(AuthConfigError::UnsupportedKey(_))
        ));
        assert!(matches!(
            Verifier::public_key_pem(ED_PRIVATE),
            Err(AuthConfigError::UnsupportedKey(_))
        ));
        assert!(matches!(
            Verifier::public_key_pem(EC_PUBLIC),
            Err(AuthConfigError::UnsupportedKey(_))
        ));
        assert!(matches!(
            Verifier::public_key_pem(RSA1024_PUBLIC),
            Err(AuthConfigError::Key(_))
        ));
        assert!(matches!(
            Verifier::public_key_pem(b"not a pem"),
            Err(AuthConfigError::Key(_))
        ));
        assert!(matches!(Verifier::public_key_pem(b""), Err(AuthConfigError::Key(_))));
    }

    #[test]
    fn rs256_accepts_tokens_from_the_private_key() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
        let token = sign(Algorithm::RS256, &key, &alice(NOW + 60));
        for public in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
            let v = Verifier::public_key_pem(public).unwrap();
            assert_eq!(v.verify(&token, NOW).unwrap().user, "alice");
        }
        // Another RSA algorithm with the same key is not accepted.
        let ps = sign(Algorithm::PS256, &key, &alice(NOW + 60));
        let v = Verifier::public_key_pem(RSA_PUBLIC).unwrap();
        assert_eq!(v.verify(&ps, NOW), Err(AuthError::AlgorithmNotAllowed));
    }

    #[test]
    fn eddsa_accepts_tokens_from_the_private_key() {
        let key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
        let v = Verifier::public_key_pem(ED_PUBLIC).unwrap();
        let id = v.verify(&sign(Algorithm::EdDSA, &key, &alice(NOW + 60)), NOW).unwrap();
        assert_eq!(id.user, "alice");
        // An RS256 token is not accepted by an EdDSA verifier, nor vice versa.
        let rs = sign(
            Algorithm::RS256,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            &alice(NOW + 60),
        );
        assert_eq!(v.verify(&rs, NOW), Err(AuthError::AlgorithmNotAllowed));
        let ed = sign(Algorithm::EdDSA, &key, &alice(NOW + 60));
        let rsa = Verifier::public_key_pem(RSA_PUBLIC).unwrap();
        assert_eq!(rsa.verify(&ed, NOW), Err(AuthError::AlgorithmNotAllowed));
    }

    #[test]
    fn algorithm_confusion_is_rejected() {
        let v = Verifier::public_key_pem(RSA_PUBLIC).unwrap();
        // HS256 "signed" with the public key as the HMAC secret.
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(RSA_PUBLIC),
            &alice(NOW + 60),
        );
        assert_eq!(v.verify(&confused, NOW), Err(AuthError::AlgorithmNotAllowed));
        // And an HS256 verifier refuses RS256 tokens.
        let rs = sign(
            Algorithm::RS256,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
            &alice(NOW + 60),
        );
        assert_eq!(hs_verifier().verify(&rs, NOW), Err(AuthError::AlgorithmNotAllowed));
        // `alg: none`, with and without a signature part.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        let body = "eyJzdWIiOiJhbGljZSIsImV4cCI6NDAwMDAwMDAwMH0"; // {"sub":"alice","exp":4000000000}
        for token in [
            format!("{header}.{body}."),
            format!("{header}.{body}"),
            format!("{header}.{body}.c2ln"),
        ] {
            for v in [&v, &hs_verifier()] {
                assert!(matches!(v.verify(&token, NOW), Err(AuthError::Malformed(_))), "{token}");
            }
        }
    }

    #[test]
    fn issuer_and_audience() {
        let v = hs_verifier();
        let with_aud = TestClaims {
            aud: Some("herald"),
            ..alice(NOW + 60)
        };
        // An `aud` nobody configured is refused.
        assert_eq!(v.verify(&hs(&with_aud), NOW), Err(AuthError::WrongAudience));
        let v = v.with_audience("herald").with_issuer("idp");
        assert_eq!(v.verify(&hs(&with_aud), NOW), Err(AuthError::WrongIssuer));
        let both = TestClaims {
            iss: Some("idp"),
            ..with_aud
        };
        assert!(v.verify(&hs(&both), NOW).is_ok());
        let wrong = TestClaims {
            aud: Some("other"),
            ..both
        };
        assert_eq!(v.verify(&hs(&wrong), NOW), Err(AuthError::WrongAudience));
        let missing = TestClaims {
            iss: Some("idp"),
            ..alice(NOW + 60)
        };
        assert_eq!(v.verify(&hs(&missing), NOW), Err(AuthError::WrongAudience));
    }

    #[test]
    fn pattern_matching() {
        let patterns = RoomPatterns::parse(&["chat:*", "news", "a/b/*"]).unwrap();
        let id = Identity {
            user: "alice".into(),
            expires_at: None,
            subscribe: patterns.clone(),
            publish: patterns,
            admin: false,
        };
        let table = [
            ("news", true),
            ("news:x", false),
            ("new", false),
            ("chat:x", true),
            ("chat:x:y", true),
            ("chat:", true),
            ("chat", false),
            ("chats:x", false),
            ("a/b/c", true),
            ("a/b", false),
            ("user:alice", false),
        ];
        for (room, expected) in table {
            assert_eq!(id.may_publish(room), expected, "publish {room}");
            assert_eq!(
                id.may_subscribe(room),
                expected || room == "user:alice",
                "subscribe {room}"
            );
        }
        assert!(id.may_subscribe("user:alice"));
        assert!(!id.may_subscribe("user:alice2") && !id.may_subscribe("user:") && !id.may_subscribe("user:bob"));

        let all = RoomPatterns::all();
        assert!(["x", "chat:x", "user:bob", ""].iter().all(|r| all.matches(r)));
        assert!(!RoomPatterns::none().matches("x"));
        assert_eq!(all.iter().collect::<Vec<_>>(), ["*"]);
    }

    #[test]
    fn pattern_limits() {
        assert!(RoomPatterns::parse(&vec!["r"; MAX_PATTERNS]).is_ok());
        assert!(RoomPatterns::parse(&vec!["r"; MAX_PATTERNS + 1]).is_err());
        assert!(RoomPatterns::parse(&["x".repeat(MAX_PATTERN_BYTES)]).is_ok());
        assert!(RoomPatterns::parse(&[format!("{}*", "x".repeat(MAX_PATTERN_BYTES - 1))]).is_ok());
        assert!(RoomPatterns::parse(&["x".repeat(MAX_PATTERN_BYTES + 1)]).is_err());
        for bad in ["", "a*b", "**", "*a", "sp ace*", "é"] {
            assert!(RoomPatterns::parse(&[bad]).is_err(), "{bad:?}");
        }
        let too_many = TestClaims {
            subscribe: Some(vec!["r".into(); MAX_PATTERNS + 1]),
            ..alice(NOW + 60)
        };
        assert_eq!(
            hs_verifier().verify(&hs(&too_many), NOW),
            Err(AuthError::Malformed("too many room patterns"))
        );
        let invalid = TestClaims {
            publish: Some(vec!["bad room".into()]),
            ..alice(NOW + 60)
        };
        assert_eq!(
            hs_verifier().verify(&hs(&invalid), NOW),
            Err(AuthError::Malformed("invalid room pattern"))
        );
    }

    #[test]
    fn development_tokens() {
        let v = Verifier::development();
        assert!(v.is_development() && !hs_verifier().is_development());
        let id = v.verify("alice@example.com/phone-1", NOW).unwrap();
        assert_eq!(id.user, "alice@example.com/phone-1");
        assert_eq!(id.expires_at, None);
        assert!(!id.admin && id.may_subscribe("anything") && id.may_publish("chat:x"));
        assert!(v.verify(&"u".repeat(64), NOW).is_ok());
        for bad in ["", "a b", "alice!", "ünïcode", "a\0b", &"u".repeat(65)] {
            assert_eq!(v.verify(bad, NOW), Err(AuthError::InvalidSubject), "{bad:?}");
        }
        // Development tokens are not accepted by a signed verifier.
        assert!(matches!(
            hs_verifier().verify("alice", NOW),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_tokens_are_rejected_unparsed() {
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        for v in [Verifier::development(), hs_verifier()] {
            assert_eq!(v.verify(&huge, NOW), Err(AuthError::Malformed("token too long")));
        }
        // A validly signed token over the limit is refused too.
        let claims = TestClaims {
            subscribe: Some(vec!["x".repeat(100); 40]),
            ..alice(NOW + 60)
        };
        assert_eq!(
            hs_verifier().verify(&hs(&claims), NOW),
            Err(AuthError::Malformed("token too long"))
        );
    }

    #[test]
    fn garbage_never_panics() {
        let verifiers = [
            Verifier::development(),
            hs_verifier(),
            Verifier::public_key_pem(RSA_PUBLIC).unwrap(),
            Verifier::public_key_pem(ED_PUBLIC).unwrap(),
        ];
        let valid = hs(&alice(NOW + 60));
        let mut inputs: Vec<String> = [
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "e30.e30.",
            "e30.e30.e30",
            "eyJhbGciOiJIUzI1NiJ9.e30.",
            "\u{feff}.x.y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every truncation and a byte flip at every position of a valid token.
        for i in 0..valid.len() {
            inputs.push(valid[..i].to_owned());
            let mut flipped = valid.clone().into_bytes();
            flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
            inputs.push(String::from_utf8(flipped).unwrap());
        }
        for v in &verifiers {
            for input in &inputs {
                if let Err(e) = v.verify(input, NOW) {
                    // Messages never echo the token.
                    assert!(input.len() < 8 || !e.to_string().contains(input.as_str()));
                }
            }
        }
        assert!(hs_verifier().verify(&valid, NOW).is_ok());
    }

    #[test]
    fn mint_round_trip() {
        let request = MintRequest {
            user: "alice".into(),
            rooms: vec!["chat:*".into(), "news".into()],
            ttl: Duration::from_secs(3600),
            admin: true,
        };
        let token = mint_hs256(SECRET, &request, NOW).unwrap();
        let v = hs_verifier();
        let id = v.verify(&token, NOW).unwrap();
        assert_eq!(id.user, "alice");
        assert_eq!(id.expires_at, Some(NOW + 3600));
        assert!(id.admin);
        assert_eq!(id.subscribe, id.publish);
        assert!(id.may_publish("chat:x") && id.may_subscribe("news") && !id.may_publish("other"));
        assert!(v.verify(&token, NOW + 3600 + LEEWAY_SECS - 1).is_ok());
        assert_eq!(v.verify(&token, NOW + 3600 + LEEWAY_SECS), Err(AuthError::Expired));
        // The wrong secret does not verify it.
        let other = Verifier::hs256(b"another secret that is long enough!!").unwrap();
        assert_eq!(other.verify(&token, NOW), Err(AuthError::BadSignature));

        let plain = MintRequest {
            rooms: vec![],
            admin: false,
            ..request.clone()
        };
        let id = v.verify(&mint_hs256(SECRET, &plain, NOW).unwrap(), NOW).unwrap();
        assert!(!id.admin && id.subscribe.is_empty() && id.may_subscribe("user:alice"));
    }

    #[test]
    fn mint_refuses_invalid_requests() {
        let ok = MintRequest {
            user: "alice".into(),
            rooms: vec![],
            ttl: Duration::from_secs(60),
            admin: false,
        };
        assert!(matches!(
            mint_hs256(b"short", &ok, NOW),
            Err(AuthConfigError::SecretTooShort { .. })
        ));
        let cases = [
            MintRequest {
                user: "not valid".into(),
                ..ok.clone()
            },
            MintRequest {
                rooms: vec!["bad room".into()],
                ..ok.clone()
            },
            MintRequest {
                rooms: vec!["r".into(); MAX_PATTERNS + 1],
                ..ok.clone()
            },
            MintRequest {
                ttl: Duration::from_millis(500),
                ..ok.clone()
            },
            MintRequest {
                ttl: Duration::from_secs(u64::MAX),
                ..ok.clone()
            },
        ];
        for request in &cases {
            assert!(
                matches!(mint_hs256(SECRET, request, NOW), Err(AuthConfigError::Claims(_))),
                "{request:?}"
            );
        }
    }

    #[test]
    fn verifier_can_be_shared_across_shards() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Verifier>();
        shareable::<Identity>();
    }

    #[test]
    fn debug_and_errors_do_not_leak_keys() {
        let debug = format!("{:?}", hs_verifier());
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(debug.contains("HS256"));
        let err = Verifier::hs256(b"secret-secret").unwrap_err().to_string();
        assert!(!err.contains("secret-secret"), "{err}");
    }
}
