//! # Minka client SDK
//!
//! What a community leader's phone app embeds: a local, durable copy of the district's budget
//! proposals, actas and observations that works with no connection, typed edits checked on the
//! phone by the same permission function the server runs, and a sync connection to Minka that
//! survives bad mobile networks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), minka_client::Error> {
//! use minka_client::{Client, ProposalDraft};
//! let client = Client::open("/data/minka")?;          // works offline from here on
//! client.set_token("eyJ…")?;                          // who the user is (the app's login)
//! let id = client.create_proposal(ProposalDraft {
//!     title: "Veredas para el jirón Los Olivos".into(),
//!     description: "Construir 300 m de veredas.".into(),
//!     zone: "zona-1".into(),
//!     category: "vías y veredas".into(),
//!     beneficiaries: 1200,
//!     estimated_cost: 45_000_000, // céntimos
//!     cofinancing: 0,
//! })?;                                                // durable (fsynced) when this returns
//! client.connect("wss://minka.example.pe/sync", "eyJ…")?; // syncs in the background
//! let mut events = client.events();
//! while let Ok(event) = events.recv().await {
//!     println!("{event:?} — {:?}", client.status(&id)?);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Architecture
//! The protocol lives in `crdt_core::engine`, a sans-IO state machine (per-document sync state,
//! what to send on connect, on a local change and on each frame, when a document counts as
//! acknowledged, what a rejection names). This crate adds the IO: a sled store in the app's
//! folder (`store`), a WebSocket over rustls with the token in the `Authorization` header, and the
//! timers (reconnect backoff with full jitter, keepalive), all on tokio. The load generator and
//! the test harness drive the same engine.
//!
//! ## Why not samod
//! samod (the Rust automerge-repo) was weighed and not used, for reasons that matter on a phone
//! talking to Minka: samod 0.16 closes the whole connection on any protocol `error`, and Minka
//! sends one for every rejected batch, so one refused edit would cut a phone off and reconnect it
//! in a loop; its tungstenite dialer cannot send an `Authorization` header (Minka's phones would
//! have to put the token in the URL, where proxies log it) and pulls in native-tls, which means
//! OpenSSL on Android; it has no keepalive, so a dead mobile socket is noticed only by the OS
//! after minutes; it cannot list the documents in its store; and its API has broken at every
//! minor version. What this SDK needs from a repo — sync states per document, a store, a
//! connection — is small once the protocol is in a shared engine, and owning it lets rejections,
//! statuses and the typed schema be first-class.
//!
//! ## Guarantees
//! - Every typed edit is checked locally ([`Error::NotPermitted`], [`Error::InvalidInput`]) and,
//!   once the call returns `Ok`, is fsynced in the local store: killing the app loses nothing it
//!   was told was saved.
//! - A document is [`DocStatus::Synced`] only when the server has acknowledged every change of
//!   it (the server acknowledges after its own fsync).
//! - A change the server refuses stays visible as [`DocStatus::Rejected`] with the server's
//!   reason until the app calls [`Client::discard_rejected`] or [`Client::reapply_rejected`].
//! - Events go through a bounded broadcast channel ([`EVENT_CAPACITY`]): a receiver that falls
//!   behind gets `RecvError::Lagged` and should re-read the statuses it shows.

mod client;
mod net;
mod replay;
pub mod store;
mod types;

pub use client::{Client, Options};
pub use crdt_core::engine::{Backoff, Keepalive};
pub use crdt_core::schema::{
    Acta, ActaStatus, AnyDocument, Attendee, Comment, DocType, Edit, Observation, Proposal,
    ProposalStatus, Signature,
};
pub use crdt_core::{DocumentId, Role, Ubigeo, UserId};
pub use types::{
    ActaDraft, ConcurrentValue, ConnectionState, DocStatus, DocSummary, Event, Identity,
    ObservationDraft, ProposalDraft, Rejection, SyncInfo,
};

/// Capacity of the event channel.
pub const EVENT_CAPACITY: usize = 4096;

/// What can go wrong, by the kind of reaction the app needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is invalid (a negative amount, an empty title, a malformed id): fix the input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// This user's roles may not make this edit (the server would refuse it): nothing was written.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// No such document in the local store.
    #[error("document {0} is not in the local store")]
    NotFound(DocumentId),
    /// The document is not of the expected type or does not follow schema v1.
    #[error("document {0}: {1}")]
    Schema(DocumentId, String),
    /// No token was ever given, or it cannot be read: call [`Client::set_token`].
    #[error("authentication: {0}")]
    Auth(String),
    /// Nothing to discard or re-apply: the document has no rejected change.
    #[error("document {0} has no rejected change")]
    NothingRejected(DocumentId),
    /// The local store failed (disk full, corrupt file); nothing was acknowledged as saved.
    #[error("local store: {0}")]
    Store(String),
}
