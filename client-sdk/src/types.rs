//! The values the SDK hands to the app.

use std::time::{Duration, SystemTime};

use automerge::ChangeHash;
use base64::Engine as _;
use crdt_core::permissions::Principal;
use crdt_core::schema::{Attendee, DocType};
use crdt_core::{DistrictScope, DocumentId, Role, UserId};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Who is using the phone, as the token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    pub name: String,
    pub roles: Vec<Role>,
    pub district: DistrictScope,
    /// The token's `exp`, unix seconds.
    pub expires_at: Option<u64>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    district: String,
    #[serde(default)]
    exp: Option<u64>,
}

impl Identity {
    /// Reads the claims of a Minka token. The signature is not checked: the phone cannot (the
    /// secret is the server's) and need not (the server checks it); the claims only tell the
    /// typed API whose edits these are, and the server judges them again.
    pub fn from_token(token: &str) -> Result<Self, Error> {
        let payload = token
            .split('.')
            .nth(1)
            .ok_or_else(|| Error::Auth("not a JWT (no payload part)".into()))?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| Error::Auth(format!("token payload is not base64url: {e}")))?;
        let c: Claims = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Auth(format!("token claims: {e}")))?;
        let user = UserId::new(c.sub).map_err(|e| Error::Auth(format!("token sub: {e}")))?;
        let roles = c
            .roles
            .iter()
            .map(|r| r.parse())
            .collect::<Result<Vec<Role>, _>>()
            .map_err(|e| Error::Auth(format!("token roles: {e}")))?;
        let district = c
            .district
            .parse()
            .map_err(|e| Error::Auth(format!("token district: {e}")))?;
        Ok(Identity {
            user,
            name: c.name,
            roles,
            district,
            expires_at: c.exp,
        })
    }

    pub(crate) fn principal(&self) -> Principal {
        Principal::new(self.user.clone(), self.roles.iter().copied(), self.district)
    }
}

/// A new proposal; district, fiscal year and author come from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalDraft {
    pub title: String,
    pub description: String,
    pub zone: String,
    pub category: String,
    pub beneficiaries: i64,
    /// In céntimos.
    pub estimated_cost: i64,
    /// In céntimos.
    pub cofinancing: i64,
}

/// A new acta; district, fiscal year and author come from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActaDraft {
    pub title: String,
    pub kind: crdt_core::schema::ActaKind,
    /// ISO 8601 date.
    pub date: String,
    pub place: String,
    pub committee_members: Vec<UserId>,
    pub attendees: Vec<(UserId, Attendee)>,
    pub agreements: Vec<String>,
}

/// A new observation of a committee; district, fiscal year and author come from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationDraft {
    pub target: DocumentId,
    pub kind: String,
    pub description: String,
    pub evidence: Vec<String>,
}

/// How a document stands against the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocStatus {
    /// Created or edited here and never confirmed by the server.
    LocalOnly,
    /// The server has part of it; some local changes are not acknowledged yet.
    Pending,
    /// The server holds every change.
    Synced,
    /// The server refused a change (its reason); discard or re-apply it.
    Rejected { reason: String },
}

/// A document's status with its details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncInfo {
    pub status: DocStatus,
    /// Local changes the server has not acknowledged (rejected ones included).
    pub unacknowledged: usize,
    /// When the server last confirmed or sent something for this document.
    pub last_synced: Option<SystemTime>,
}

/// A change the server refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The refused change (changes made on top of it were refused with it).
    #[serde(with = "hash_hex")]
    pub change: ChangeHash,
    /// The server's reason.
    pub reason: String,
    /// When the phone learned of it, unix seconds.
    pub at: i64,
}

mod hash_hex {
    use automerge::ChangeHash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &ChangeHash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ChangeHash, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One document in [`crate::Client::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSummary {
    pub id: DocumentId,
    pub doc_type: DocType,
    pub title: String,
    /// The document's status field (`draft`, `signing`, ...).
    pub status: String,
    pub sync: DocStatus,
}

/// One of the concurrent values of a field ("two people changed this").
#[derive(Debug, Clone, PartialEq)]
pub struct ConcurrentValue {
    pub value: serde_json::Value,
    /// The automerge actor (hex) that wrote it; the review API maps actors to users.
    pub actor: String,
    /// Whether this is the value automerge shows (the winner of the conflict).
    pub winner: bool,
}

/// The connection to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Not asked to connect, or disconnected by the app.
    Offline,
    Connecting,
    Connected,
    /// Waiting before the next attempt (`attempt` consecutive failures so far).
    Retrying {
        attempt: u32,
        in_: Duration,
    },
    /// The server refused the token (expired, revoked): call [`crate::Client::set_token`].
    /// Not retried until then.
    NeedsToken {
        reason: String,
    },
}

/// What happened, for the app to refresh what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ChangedLocally(DocumentId),
    ChangedRemotely(DocumentId),
    /// A document appeared in the district index and is being downloaded.
    Discovered(DocumentId),
    /// The server now holds every change of this document.
    Synced(DocumentId),
    Rejected {
        doc: DocumentId,
        reason: String,
    },
    Connection(ConnectionState),
    /// A protocol `error` that is not a rejection (logged by the server too).
    ServerError(String),
}
