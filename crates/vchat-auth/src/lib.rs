//! vchat-auth: who may join which room, as a signed access token.
//!
//! A token is an HS256 JWT with LiveKit's claims: `sub` (the identity), an
//! optional `name` (shown on the tile), `iss` (the id of the key that signed
//! it), `exp` and `nbf` (seconds since the Unix epoch), and a `video` grant
//! `{room, roomJoin, canPublish, canSubscribe}` (the snake_case spellings
//! `room_join`, `can_publish`, `can_subscribe` are read too).
//!
//! - [`mint`] makes a token: the library function behind `vchat token`, for a
//!   backend that hands tokens to its users.
//! - [`Verifier`] holds the server's keys and turns a token into a [`Grant`], or
//!   an [`AuthError`] whose [`Denial`] tells a door which status to answer with
//!   (UNAUTHENTICATED / 401, PERMISSION_DENIED / 403).
//!
//! Signing and verifying go through `jsonwebtoken` 9, which uses ring, the same
//! crypto library as the gateway's TLS (rustls with ring); it needs no provider
//! installed at start-up. This crate has no feature flags.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest secret accepted, in bytes: HS256's key should be at least as long as
/// its 256-bit output, or the signature is only as strong as a guessable secret.
pub const MIN_SECRET_BYTES: usize = 32;
/// Default lifetime of a minted token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);
/// Seconds of clock difference between the minting machine and the server
/// that `exp` and `nbf` tolerate.
pub const DEFAULT_LEEWAY_S: u64 = 10;
/// Longest identity, display name or room, in bytes: the same as every door's
/// names (`vchat_core::MAX_NAME_BYTES`).
pub const MAX_NAME_BYTES: usize = 128;
/// Longest token read, in bytes; a longer one is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The `video` grant of a token (LiveKit's `VideoGrant`, the part vchat reads).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoGrant {
    /// The one room the token lets its holder into.
    #[serde(default)]
    pub room: String,
    /// Whether the holder may join `room` at all.
    #[serde(default, rename = "roomJoin", alias = "room_join")]
    pub room_join: bool,
    /// Whether the holder's frames appear in the room (absent: true); false: a
    /// viewer, who sees the room without being in it.
    #[serde(
        default,
        rename = "canPublish",
        alias = "can_publish",
        skip_serializing_if = "Option::is_none"
    )]
    pub can_publish: Option<bool>,
    /// Whether the holder receives the room's mosaics (absent: true); false: its
    /// frames are acknowledged without a mosaic.
    #[serde(
        default,
        rename = "canSubscribe",
        alias = "can_subscribe",
        skip_serializing_if = "Option::is_none"
    )]
    pub can_subscribe: Option<bool>,
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The identity: the user's id in the room (`tags.user`).
    pub sub: String,
    /// The name shown on the user's tile; absent: the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The id of the key that signed the token.
    pub iss: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: u64,
    /// What the token grants.
    #[serde(default)]
    pub video: VideoGrant,
}

/// What a verified token lets its holder do: one identity in one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who the holder is (`sub`).
    pub identity: String,
    /// The name on the holder's tile (`name`), when the token gives one.
    pub name: Option<String>,
    /// The one room the holder may be in.
    pub room: String,
    /// The holder's frames appear in the room.
    pub can_publish: bool,
    /// The holder receives the room's mosaics.
    pub can_subscribe: bool,
}

/// Which answer a refusal gets at a door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Who the peer is is not established: gRPC UNAUTHENTICATED, HTTP 401.
    Unauthenticated,
    /// The peer is known but not allowed this: gRPC PERMISSION_DENIED, HTTP 403.
    PermissionDenied,
}

/// Why a token was refused, or a key or token could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token came with the stream.
    #[error(
        "an access token is required: send `authorization: Bearer <token>` (gRPC metadata) or \
         `?access_token=<token>` (WebSocket)"
    )]
    Missing,
    /// The token is not a JWT of the expected shape.
    #[error("the access token is malformed: {0}")]
    Malformed(String),
    /// The token names a key id (`iss`) the server does not have.
    #[error("the access token is signed with key {0:?}, which this server does not know")]
    UnknownKey(String),
    /// The signature does not match the key the token names.
    #[error("the access token's signature is not valid for key {0:?}")]
    BadSignature(String),
    /// `exp` has passed.
    #[error("the access token has expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("the access token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// The grant does not allow joining a room.
    #[error("the access token does not allow joining a room (video.roomJoin is not true)")]
    JoinNotGranted,
    /// The peer asked for a room the token does not grant.
    #[error("the access token grants room {granted:?}, not room {asked:?}")]
    RoomNotGranted {
        /// The room of the token.
        granted: String,
        /// The room asked for.
        asked: String,
    },
    /// The peer asked to be someone the token is not for.
    #[error("the access token is for {granted:?}, not {asked:?}")]
    IdentityNotGranted {
        /// The identity of the token.
        granted: String,
        /// The identity asked for.
        asked: String,
    },
    /// A secret shorter than [`MIN_SECRET_BYTES`].
    #[error("the secret of key {0:?} is shorter than {MIN_SECRET_BYTES} bytes")]
    WeakSecret(String),
    /// Claims that cannot make a usable token (empty identity, names too long).
    #[error("{0}")]
    BadClaims(String),
}

impl AuthError {
    /// The status a door answers this refusal with.
    pub fn denial(&self) -> Denial {
        match self {
            AuthError::JoinNotGranted
            | AuthError::RoomNotGranted { .. }
            | AuthError::IdentityNotGranted { .. } => Denial::PermissionDenied,
            _ => Denial::Unauthenticated,
        }
    }
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The identity (`sub`).
    pub identity: String,
    /// The name on the tile.
    pub name: Option<String>,
    /// The room granted.
    pub room: String,
    /// How long the token is valid from now.
    pub ttl: Duration,
    /// The holder's frames appear in the room.
    pub can_publish: bool,
    /// The holder receives mosaics.
    pub can_subscribe: bool,
}

impl TokenSpec {
    /// A token for `identity` in `room`, valid for [`DEFAULT_TTL`], that may
    /// publish and subscribe.
    pub fn new(identity: impl Into<String>, room: impl Into<String>) -> Self {
        TokenSpec {
            identity: identity.into(),
            name: None,
            room: room.into(),
            ttl: DEFAULT_TTL,
            can_publish: true,
            can_subscribe: true,
        }
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn check_names(identity: &str, name: Option<&str>, room: &str) -> Result<(), AuthError> {
    if identity.trim().is_empty() {
        return Err(AuthError::BadClaims(
            "the access token names no identity (sub)".into(),
        ));
    }
    for (what, value) in [
        ("identity (sub)", identity),
        ("name", name.unwrap_or("")),
        ("room", room),
    ] {
        if value.len() > MAX_NAME_BYTES {
            return Err(AuthError::BadClaims(format!(
                "the access token's {what} is {} bytes, over the limit of {MAX_NAME_BYTES}",
                value.len()
            )));
        }
    }
    Ok(())
}

/// A token for `spec`, signed with `secret` under the key id `key_id` (its `iss`).
pub fn mint(key_id: &str, secret: &[u8], spec: &TokenSpec) -> Result<String, AuthError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthError::WeakSecret(key_id.to_string()));
    }
    check_names(&spec.identity, spec.name.as_deref(), &spec.room)?;
    if spec.room.is_empty() {
        return Err(AuthError::BadClaims("a token must grant a room".into()));
    }
    let now = now_s();
    let claims = Claims {
        sub: spec.identity.clone(),
        name: spec.name.clone(),
        iss: key_id.to_string(),
        exp: now.saturating_add(spec.ttl.as_secs()),
        nbf: now,
        video: VideoGrant {
            room: spec.room.clone(),
            room_join: true,
            can_publish: Some(spec.can_publish),
            can_subscribe: Some(spec.can_subscribe),
        },
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::BadClaims(e.to_string()))
}

/// A token of exactly these `claims`, signed with `secret` (for a backend with
/// claims of its own making, and for tests of expired or narrow grants).
pub fn sign(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthError::WeakSecret(claims.iss.clone()));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::BadClaims(e.to_string()))
}

/// Seconds since the Unix epoch, as `exp` and `nbf` count.
pub fn unix_now() -> u64 {
    now_s()
}

/// A secret as written in a configuration: `${NAME}` is the environment
/// variable NAME (so that secrets stay out of YAML files), anything else is the
/// secret itself.
pub fn expand_env(value: &str) -> Result<String, String> {
    let v = value.trim();
    match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(name) => std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set (named as ${{{name}}})")),
        None => Ok(value.to_string()),
    }
}

/// Only `iss` is read before the key is known.
#[derive(Deserialize)]
struct Issuer {
    #[serde(default)]
    iss: Option<String>,
}

/// The server's keys: turns tokens into [`Grant`]s.
#[derive(Clone)]
pub struct Verifier {
    keys: BTreeMap<String, DecodingKey>,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("Verifier")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    /// A verifier of tokens signed with these keys (key id → secret); every
    /// secret must be at least [`MIN_SECRET_BYTES`] long.
    pub fn new<K: AsRef<str>, S: AsRef<[u8]>>(
        keys: impl IntoIterator<Item = (K, S)>,
    ) -> Result<Self, AuthError> {
        let mut map = BTreeMap::new();
        for (id, secret) in keys {
            let (id, secret) = (id.as_ref(), secret.as_ref());
            if secret.len() < MIN_SECRET_BYTES {
                return Err(AuthError::WeakSecret(id.to_string()));
            }
            map.insert(id.to_string(), DecodingKey::from_secret(secret));
        }
        if map.is_empty() {
            return Err(AuthError::BadClaims("auth.keys names no key".into()));
        }
        Ok(Verifier {
            keys: map,
            leeway: DEFAULT_LEEWAY_S,
        })
    }

    /// The grant of `token` (absent: [`AuthError::Missing`]); `room`, when the
    /// peer asks for one, must be the token's.
    pub fn verify(&self, token: Option<&str>, room: Option<&str>) -> Result<Grant, AuthError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(AuthError::Missing);
        };
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed(format!(
                "{} bytes, over the limit of {MAX_TOKEN_BYTES}",
                token.len()
            )));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Malformed(format!(
                "signed with {:?}; only HS256 is accepted",
                header.alg
            )));
        }
        // The key id is in the claims (`iss`, as LiveKit's): read it unverified,
        // only to choose the key that then verifies everything.
        let mut peek = Validation::new(Algorithm::HS256);
        peek.insecure_disable_signature_validation();
        peek.validate_exp = false;
        peek.required_spec_claims.clear();
        let issuer = jsonwebtoken::decode::<Issuer>(token, &DecodingKey::from_secret(b""), &peek)
            .map_err(|e| AuthError::Malformed(e.to_string()))?
            .claims
            .iss
            .ok_or_else(|| AuthError::Malformed("no key id (iss)".into()))?;
        let Some(key) = self.keys.get(&issuer) else {
            return Err(AuthError::UnknownKey(issuer));
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub", "iss"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &v)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature(issuer.clone()),
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Malformed(e.to_string()),
            })?
            .claims;
        check_names(&claims.sub, claims.name.as_deref(), &claims.video.room)?;
        let video = claims.video;
        if !video.room_join || video.room.is_empty() {
            return Err(AuthError::JoinNotGranted);
        }
        if let Some(asked) = room
            && asked != video.room
        {
            return Err(AuthError::RoomNotGranted {
                granted: video.room,
                asked: asked.to_string(),
            });
        }
        Ok(Grant {
            identity: claims.sub,
            name: claims.name.filter(|n| !n.is_empty()),
            room: video.room,
            can_publish: video.can_publish.unwrap_or(true),
            can_subscribe: video.can_subscribe.unwrap_or(true),
        })
    }
}

/// A bearer token from an `authorization` header value (`Bearer <token>`, the
/// scheme in any case).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        Verifier::new([("k1", SECRET)]).unwrap()
    }

    fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn a_minted_token_verifies_to_its_grant() {
        let mut spec = TokenSpec::new("alice", "r1");
        spec.name = Some("Alice".into());
        spec.can_publish = false;
        let t = mint("k1", SECRET, &spec).unwrap();
        let g = verifier().verify(Some(&t), None).unwrap();
        assert_eq!(
            g,
            Grant {
                identity: "alice".into(),
                name: Some("Alice".into()),
                room: "r1".into(),
                can_publish: false,
                can_subscribe: true,
            }
        );
        assert_eq!(verifier().verify(Some(&t), Some("r1")).unwrap(), g);
    }

    #[test]
    fn each_refusal_has_its_own_reason_and_status() {
        let v = verifier();
        let ok = mint("k1", SECRET, &TokenSpec::new("alice", "r1")).unwrap();
        let cases = [
            (v.verify(None, None), AuthError::Missing),
            (
                v.verify(
                    Some(&mint("k2", SECRET, &TokenSpec::new("a", "r1")).unwrap()),
                    None,
                ),
                AuthError::UnknownKey("k2".into()),
            ),
            (
                v.verify(
                    Some(&mint("k1", &[b'x'; 32], &TokenSpec::new("a", "r1")).unwrap()),
                    None,
                ),
                AuthError::BadSignature("k1".into()),
            ),
            (
                v.verify(Some(&ok), Some("r2")),
                AuthError::RoomNotGranted {
                    granted: "r1".into(),
                    asked: "r2".into(),
                },
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.unwrap_err(), want);
        }
        let now = now_s();
        let expired = sign(
            &serde_json::json!({"sub": "a", "iss": "k1", "exp": now - 3600, "nbf": now - 7200,
                "video": {"room": "r1", "roomJoin": true}}),
            SECRET,
        );
        assert_eq!(v.verify(Some(&expired), None), Err(AuthError::Expired));
        let early = sign(
            &serde_json::json!({"sub": "a", "iss": "k1", "exp": now + 7200, "nbf": now + 3600,
                "video": {"room": "r1", "roomJoin": true}}),
            SECRET,
        );
        assert_eq!(v.verify(Some(&early), None), Err(AuthError::NotYetValid));
        let no_join = sign(
            &serde_json::json!({"sub": "a", "iss": "k1", "exp": now + 60,
                "video": {"room": "r1", "room_join": false}}),
            SECRET,
        );
        let e = v.verify(Some(&no_join), None).unwrap_err();
        assert_eq!(e, AuthError::JoinNotGranted);
        assert_eq!(e.denial(), Denial::PermissionDenied);
        assert_eq!(AuthError::Expired.denial(), Denial::Unauthenticated);
        assert!(matches!(
            v.verify(Some("not.a.jwt"), None),
            Err(AuthError::Malformed(_))
        ));
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            v.verify(Some(&huge), None),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn snake_case_grants_are_read_and_defaults_allow_both_directions() {
        let now = now_s();
        let t = sign(
            &serde_json::json!({"sub": "bob", "iss": "k1", "exp": now + 60,
                "video": {"room": "r", "room_join": true}}),
            SECRET,
        );
        let g = verifier().verify(Some(&t), None).unwrap();
        assert!(g.can_publish && g.can_subscribe && g.name.is_none());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            Verifier::new([("k", b"short".as_slice())]).unwrap_err(),
            AuthError::WeakSecret("k".into())
        );
        assert!(mint("k", b"short", &TokenSpec::new("a", "r")).is_err());
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn env_secrets() {
        assert_eq!(expand_env("plain").unwrap(), "plain");
        assert!(
            expand_env("${VCHAT_AUTH_TEST_UNSET_VARIABLE}")
                .unwrap_err()
                .contains("VCHAT_AUTH_TEST_UNSET_VARIABLE")
        );
    }
}
