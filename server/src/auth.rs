//! JWT authentication: HS256 tokens carrying `sub`, `name`, `roles`, `district`, `exp`, `iat`.
//!
//! Tokens come from `Authorization: Bearer <jwt>` or `?token=<jwt>` (browsers cannot set headers on
//! a WebSocket). They are never logged: errors name what is wrong, not the token.

use std::collections::BTreeSet;
use std::fmt;
use std::future::{ready, Ready};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, FromRequest, HttpRequest};
use crdt_core::{DistrictScope, Role, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The HS256 secret. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

impl JwtSecret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// Where the server keeps a generated secret inside its data directory.
    pub fn default_path(data_dir: &Path) -> std::path::PathBuf {
        data_dir.join("jwt-secret")
    }

    /// Reads a secret file (surrounding whitespace trimmed).
    pub fn read(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let trimmed = text.trim();
        if trimmed.len() < 16 {
            return Err(std::io::Error::other(format!(
                "secret in {} is shorter than 16 characters",
                path.display()
            )));
        }
        Ok(Self(trimmed.as_bytes().to_vec()))
    }

    /// Reads the secret in the data directory, or creates one there. Returns whether it was created.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<(Self, bool)> {
        let path = Self::default_path(data_dir);
        if path.exists() {
            return Ok((Self::read(&path)?, false));
        }
        std::fs::create_dir_all(data_dir)?;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&path)?;
        std::io::Write::write_all(&mut f, secret.as_bytes())?;
        f.sync_all()?;
        Ok((Self(secret.into_bytes()), true))
    }
}

/// The claims of a Minka token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub roles: Vec<String>,
    pub district: String,
    pub exp: u64,
    pub iat: u64,
}

/// An authenticated user, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub user: UserId,
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub district: DistrictScope,
    /// Unix seconds when the token expires.
    pub exp: u64,
}

impl AuthUser {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Longest token accepted (a real one is a few hundred bytes).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Furthest expiry honoured (100 years); a later `exp` counts as this.
pub const MAX_EXP_AHEAD: u64 = 100 * 365 * 24 * 3600;

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing token (use `Authorization: Bearer <jwt>` or `?token=<jwt>`)")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl JwtKeys {
    pub fn new(secret: &JwtSecret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(&secret.0),
            decoding: DecodingKey::from_secret(&secret.0),
            validation,
        }
    }

    /// Mints a token.
    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 encoding cannot fail")
    }

    /// Verifies a token and turns its claims into an [`AuthUser`].
    ///
    /// Only HS256 with the configured secret is accepted: the header's algorithm is checked before
    /// anything else, so `alg: none` and asymmetric algorithms (RS256/ES256 "signed" with the
    /// HMAC secret or any other key) are refused with a message saying so.
    pub fn verify(&self, token: &str) -> Result<AuthUser, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid(format!(
                "token is {} bytes; at most {MAX_TOKEN_BYTES} are accepted",
                token.len()
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            AuthError::Invalid(
                "malformed token header or an algorithm other than HS256 (e.g. `none`); only HS256 tokens are accepted"
                    .into(),
            )
        })?;
        if header.alg != Algorithm::HS256 {
            return Err(AuthError::Invalid(format!(
                "token algorithm {:?} is not accepted; only HS256",
                header.alg
            )));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::MissingRequiredClaim(c) => {
                        AuthError::Invalid(format!("missing claim `{c}`"))
                    }
                    ErrorKind::InvalidClaimFormat(c) => {
                        AuthError::Invalid(format!("claim `{c}` has the wrong type"))
                    }
                    ErrorKind::InvalidSignature => {
                        AuthError::Invalid("signature does not match".into())
                    }
                    // Only after the signature checked out: the claims are the issuer's.
                    ErrorKind::Json(j) => AuthError::Invalid(format!(
                        "claims must include sub, name, roles, district, exp, iat (text, text, a list of text, text, integer seconds, integer seconds): {j}"
                    )),
                    ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                        AuthError::Invalid("malformed token".into())
                    }
                    other => AuthError::Invalid(format!("{other:?}")),
                }
            })?;
        let c = data.claims;
        let user = UserId::new(c.sub).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let roles = c
            .roles
            .iter()
            .map(|r| r.parse::<Role>())
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let district = c
            .district
            .parse::<DistrictScope>()
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok(AuthUser {
            user,
            name: c.name,
            roles,
            district,
            // A far-future expiry is kept far but finite, so timers that add it to "now" (the
            // connection's expiry, the event stream's) cannot overflow.
            exp: c.exp.min(now_unix().saturating_add(MAX_EXP_AHEAD)),
        })
    }

    /// Finds the token in a request (header first, then `?token=`) and verifies it.
    pub fn authenticate(&self, req: &HttpRequest) -> Result<AuthUser, AuthError> {
        let token = token_from_request(req).ok_or(AuthError::Missing)?;
        self.verify(&token)
    }
}

/// The raw token from `Authorization: Bearer` or the `token` query parameter.
pub fn token_from_request(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        if let Some(t) = h.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            return Some(t.trim().to_string());
        }
    }
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("token").cloned())
}

/// Extractor for handlers that need a user: refuses the request with 401 when the token is bad.
pub struct Authenticated(pub AuthUser);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let Some(keys) = req.app_data::<web::Data<JwtKeys>>() else {
            return ready(Err(ApiError::Internal("JwtKeys not configured".into())));
        };
        ready(
            keys.authenticate(req)
                .map(Authenticated)
                .map_err(ApiError::Unauthorized),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "u-1".into(),
            name: "Rosa".into(),
            roles: vec!["leader".into(), "vigilancia".into()],
            district: "150110".into(),
            exp,
            iat: now_unix(),
        }
    }

    #[test]
    fn mint_then_verify() {
        let keys = JwtKeys::new(&JwtSecret::new("0123456789abcdef0123"));
        let t = keys.mint(&claims(now_unix() + 60));
        let u = keys.verify(&t).unwrap();
        assert_eq!(u.user.as_str(), "u-1");
        assert!(u.has_role(Role::Vigilancia));
        assert_eq!(u.district, DistrictScope::One(crdt_core::Ubigeo::COMAS));
    }

    #[test]
    fn refuses_expired_foreign_and_unsigned_tokens() {
        let keys = JwtKeys::new(&JwtSecret::new("0123456789abcdef0123"));
        let other = JwtKeys::new(&JwtSecret::new("another-secret-0000000"));
        assert_eq!(
            keys.verify(&keys.mint(&claims(now_unix() - 3600))),
            Err(AuthError::Expired)
        );
        assert!(matches!(
            keys.verify(&other.mint(&claims(now_unix() + 60))),
            Err(AuthError::Invalid(_))
        ));
        // alg: none — header {"alg":"none","typ":"JWT"}, no signature.
        use base64_like::encode;
        let none = format!(
            "{}.{}.",
            encode(br#"{"alg":"none","typ":"JWT"}"#),
            encode(
                serde_json::to_string(&claims(now_unix() + 60))
                    .unwrap()
                    .as_bytes()
            )
        );
        assert!(matches!(keys.verify(&none), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn refuses_tokens_with_missing_claims() {
        let secret = "0123456789abcdef0123";
        let keys = JwtKeys::new(&JwtSecret::new(secret));
        let sign = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let exp = now_unix() + 60;
        // No roles/district/name.
        let t = sign(serde_json::json!({"sub": "u-1", "exp": exp, "iat": now_unix()}));
        assert!(matches!(keys.verify(&t), Err(AuthError::Invalid(_))));
        // No exp.
        let t = sign(
            serde_json::json!({"sub": "u-1", "name": "x", "roles": ["leader"], "district": "150110", "iat": now_unix()}),
        );
        assert!(matches!(keys.verify(&t), Err(AuthError::Invalid(_))));
        // Unknown role, district outside Lima.
        let t = sign(
            serde_json::json!({"sub": "u-1", "name": "x", "roles": ["alcalde"], "district": "150110", "exp": exp, "iat": now_unix()}),
        );
        assert!(matches!(keys.verify(&t), Err(AuthError::Invalid(_))));
        let t = sign(
            serde_json::json!({"sub": "u-1", "name": "x", "roles": ["leader"], "district": "040101", "exp": exp, "iat": now_unix()}),
        );
        assert!(matches!(keys.verify(&t), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn refuses_other_algorithms_and_clamps_a_far_expiry() {
        let secret = "0123456789abcdef0123";
        let keys = JwtKeys::new(&JwtSecret::new(secret));
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(now_unix() + 60),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            keys.verify(&t),
            Err(AuthError::Invalid(
                "token algorithm HS512 is not accepted; only HS256".into()
            ))
        );
        let far = keys.verify(&keys.mint(&claims(u64::MAX))).unwrap();
        assert!(far.exp <= now_unix() + MAX_EXP_AHEAD);
        assert!(far.exp > now_unix() + MAX_EXP_AHEAD - 60);
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = JwtSecret::new("super-secret-value-123");
        assert!(!format!("{s:?}").contains("super"));
    }

    /// Base64url without padding, enough to forge test tokens.
    mod base64_like {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        pub fn encode(input: &[u8]) -> String {
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
