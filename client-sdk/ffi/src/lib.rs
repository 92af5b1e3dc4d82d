//! The Minka client SDK for Kotlin (Android and the JVM), through UniFFI proc-macros.
//!
//! One object, [`MinkaClient`], wraps [`minka_client::Client`]: open a store, typed create and
//! edit of proposals, actas, observations and comments, typed views, the district list,
//! connect / disconnect, `setToken`, `networkChanged`, per-document status, rejections, and an
//! [`EventListener`] the app implements in Kotlin. `disconnect` and `awaitSynced` are `suspend`
//! functions in Kotlin. Errors are [`MinkaException`] subclasses of the same kinds as the Rust
//! SDK's [`minka_client::Error`].
//!
//! The binding owns a small tokio runtime (2 worker threads) for the SDK's connection and for
//! delivering events to the listener: Kotlin callers need no Rust runtime of their own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use minka_client::{
    Client, ConnectionState as RsConnection, DocStatus, DocumentId, Error as RsError,
    Event as RsEvent, Options,
};
use tokio::sync::broadcast::error::RecvError;

uniffi::setup_scaffolding!();

/// What went wrong, by what the app should do about it.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum MinkaException {
    /// Fix the input (a negative amount, an empty title, a malformed id).
    #[error("{0}")]
    InvalidInput(String),
    /// This user may not make this edit; nothing was written (the server would refuse it too).
    #[error("{0}")]
    NotPermitted(String),
    /// No such document on this phone (yet).
    #[error("{0}")]
    NotFound(String),
    /// The document does not follow schema v1 or is of another type.
    #[error("{0}")]
    Schema(String),
    /// No token, or an unreadable one: sign in again (`setToken`).
    #[error("{0}")]
    Auth(String),
    /// The server refused a change of the document being waited on (`awaitSynced`); the reason
    /// is the server's. The document stays usable: discard or re-apply the refused change.
    #[error("{0}")]
    RejectedByServer(String),
    /// Discard or re-apply on a document the server refused nothing of.
    #[error("{0}")]
    NothingRejected(String),
    /// The phone's storage failed (disk full…); nothing was reported saved.
    #[error("{0}")]
    Store(String),
}

impl From<RsError> for MinkaException {
    fn from(e: RsError) -> Self {
        let message = e.to_string();
        match e {
            RsError::InvalidInput(_) => Self::InvalidInput(message),
            RsError::NotPermitted(_) => Self::NotPermitted(message),
            RsError::NotFound(_) => Self::NotFound(message),
            RsError::Schema(..) => Self::Schema(message),
            RsError::Auth(_) => Self::Auth(message),
            RsError::NothingRejected(_) => Self::NothingRejected(message),
            RsError::Store(_) => Self::Store(message),
        }
    }
}

type Result<T> = std::result::Result<T, MinkaException>;

fn doc_id(id: &str) -> Result<DocumentId> {
    id.parse()
        .map_err(|e| MinkaException::InvalidInput(format!("document id {id:?}: {e}")))
}

/// Proposal status (schema v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ProposalStatus {
    Draft,
    Submitted,
    InEvaluation,
    Observed,
    Eligible,
    Ineligible,
    Prioritized,
    NotPrioritized,
    Withdrawn,
}

impl From<ProposalStatus> for minka_client::ProposalStatus {
    fn from(s: ProposalStatus) -> Self {
        use minka_client::ProposalStatus as P;
        match s {
            ProposalStatus::Draft => P::Draft,
            ProposalStatus::Submitted => P::Submitted,
            ProposalStatus::InEvaluation => P::InEvaluation,
            ProposalStatus::Observed => P::Observed,
            ProposalStatus::Eligible => P::Eligible,
            ProposalStatus::Ineligible => P::Ineligible,
            ProposalStatus::Prioritized => P::Prioritized,
            ProposalStatus::NotPrioritized => P::NotPrioritized,
            ProposalStatus::Withdrawn => P::Withdrawn,
        }
    }
}

impl From<minka_client::ProposalStatus> for ProposalStatus {
    fn from(s: minka_client::ProposalStatus) -> Self {
        use minka_client::ProposalStatus as P;
        match s {
            P::Draft => Self::Draft,
            P::Submitted => Self::Submitted,
            P::InEvaluation => Self::InEvaluation,
            P::Observed => Self::Observed,
            P::Eligible => Self::Eligible,
            P::Ineligible => Self::Ineligible,
            P::Prioritized => Self::Prioritized,
            P::NotPrioritized => Self::NotPrioritized,
            P::Withdrawn => Self::Withdrawn,
        }
    }
}

/// A new proposal; district, fiscal year and author come from the token.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ProposalDraft {
    pub title: String,
    pub description: String,
    pub zone: String,
    pub category: String,
    pub beneficiaries: i64,
    /// Céntimos.
    pub estimated_cost: i64,
    /// Céntimos.
    pub cofinancing: i64,
}

/// A new observation of the oversight committee.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ObservationDraft {
    /// The observed document's id.
    pub target: String,
    pub kind: String,
    pub description: String,
    pub evidence: Vec<String>,
}

/// One attendee of a new acta.
#[derive(Debug, Clone, uniffi::Record)]
pub struct AttendeeInput {
    pub user: String,
    pub name: String,
    pub organization: String,
    pub votes: bool,
}

/// A new acta (`kind`: `workshop`, `formalization` or `committee_session`).
#[derive(Debug, Clone, uniffi::Record)]
pub struct ActaDraft {
    pub title: String,
    pub kind: String,
    /// ISO 8601 date.
    pub date: String,
    pub place: String,
    pub committee_members: Vec<String>,
    pub attendees: Vec<AttendeeInput>,
    pub agreements: Vec<String>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct CommentView {
    pub author: String,
    pub text: String,
    /// Unix seconds.
    pub at: i64,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct ProposalView {
    pub id: String,
    pub district: String,
    pub process_year: u16,
    pub title: String,
    pub description: String,
    pub zone: String,
    pub category: String,
    pub beneficiaries: i64,
    pub estimated_cost: i64,
    pub cofinancing: i64,
    pub status: ProposalStatus,
    pub created_by: String,
    pub coauthors: Vec<String>,
    pub supporters: Vec<String>,
    pub comments: Vec<CommentView>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct ActaView {
    pub id: String,
    pub title: String,
    pub kind: String,
    pub status: String,
    pub date: String,
    pub place: String,
    pub agreements: Vec<String>,
    /// Users who signed.
    pub signed_by: Vec<String>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct ObservationView {
    pub id: String,
    pub target: String,
    pub kind: String,
    pub description: String,
    pub status: String,
    pub responses: Vec<CommentView>,
}

/// How a document stands against the server.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncStatus {
    LocalOnly,
    Pending,
    Synced,
    Rejected { reason: String },
}

impl From<DocStatus> for SyncStatus {
    fn from(s: DocStatus) -> Self {
        match s {
            DocStatus::LocalOnly => Self::LocalOnly,
            DocStatus::Pending => Self::Pending,
            DocStatus::Synced => Self::Synced,
            DocStatus::Rejected { reason } => Self::Rejected { reason },
        }
    }
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncInfo {
    pub status: SyncStatus,
    /// Local changes the server has not acknowledged.
    pub unacknowledged: u64,
    /// When the server last confirmed or sent something for it, unix seconds.
    pub last_synced: Option<i64>,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct DocSummary {
    pub id: String,
    /// `proposal`, `acta`, `observation` or `process`.
    pub doc_type: String,
    pub title: String,
    pub status: String,
    pub sync: SyncStatus,
}

#[derive(Debug, Clone, uniffi::Record)]
pub struct Rejection {
    pub change: String,
    pub reason: String,
    pub at: i64,
}

/// One of several values written concurrently to a field.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ConcurrentValue {
    /// The value as JSON.
    pub json: String,
    /// The automerge actor that wrote it.
    pub actor: String,
    pub winner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum ConnectionState {
    Offline,
    Connecting,
    Connected,
    Retrying {
        attempt: u32,
        in_millis: u64,
    },
    /// The server refused the token: call `setToken`. Not retried until then.
    NeedsToken {
        reason: String,
    },
}

impl From<RsConnection> for ConnectionState {
    fn from(c: RsConnection) -> Self {
        match c {
            RsConnection::Offline => Self::Offline,
            RsConnection::Connecting => Self::Connecting,
            RsConnection::Connected => Self::Connected,
            RsConnection::Retrying { attempt, in_ } => Self::Retrying {
                attempt,
                in_millis: in_.as_millis() as u64,
            },
            RsConnection::NeedsToken { reason } => Self::NeedsToken { reason },
        }
    }
}

/// What happened, for the app to refresh what it shows.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Event {
    ChangedLocally { doc: String },
    ChangedRemotely { doc: String },
    Discovered { doc: String },
    Synced { doc: String },
    Rejected { doc: String, reason: String },
    Connection { state: ConnectionState },
    ServerError { message: String },
}

impl From<RsEvent> for Event {
    fn from(e: RsEvent) -> Self {
        match e {
            RsEvent::ChangedLocally(d) => Self::ChangedLocally { doc: d.to_string() },
            RsEvent::ChangedRemotely(d) => Self::ChangedRemotely { doc: d.to_string() },
            RsEvent::Discovered(d) => Self::Discovered { doc: d.to_string() },
            RsEvent::Synced(d) => Self::Synced { doc: d.to_string() },
            RsEvent::Rejected { doc, reason } => Self::Rejected {
                doc: doc.to_string(),
                reason,
            },
            RsEvent::Connection(c) => Self::Connection { state: c.into() },
            RsEvent::ServerError(message) => Self::ServerError { message },
        }
    }
}

/// Implemented by the app (a Kotlin class); called on a binding thread, in order.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: Event);
}

/// A phone's Minka client: its local store and its connection.
#[derive(uniffi::Object)]
pub struct MinkaClient {
    client: Client,
    rt: tokio::runtime::Runtime,
    listeners: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn comments(c: Vec<minka_client::Comment>) -> Vec<CommentView> {
    c.into_iter()
        .map(|c| CommentView {
            author: c.author.to_string(),
            text: c.text,
            at: c.at,
        })
        .collect()
}

#[uniffi::export(async_runtime = "tokio")]
impl MinkaClient {
    /// Opens (or creates) the store in `dir`; `process_year` is the fiscal year whose district
    /// index the client follows (the server's `--process-year`).
    #[uniffi::constructor]
    pub fn open(dir: String, process_year: u16) -> Result<Arc<Self>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("minka-sdk")
            .enable_all()
            .build()
            .map_err(|e| MinkaException::Store(format!("cannot start the SDK's runtime: {e}")))?;
        let client = Client::open_with(
            dir,
            Options {
                process_year,
                ..Options::default()
            },
        )?;
        Ok(Arc::new(Self {
            client,
            rt,
            listeners: Mutex::new(Vec::new()),
        }))
    }

    /// Sets the token (login or refresh); returns the user id it names.
    pub fn set_token(&self, token: String) -> Result<String> {
        Ok(self.client.set_token(&token)?.user.to_string())
    }

    /// The user of the current token, if any.
    pub fn user(&self) -> Option<String> {
        self.client.identity().map(|i| i.user.to_string())
    }

    pub fn create_proposal(&self, draft: ProposalDraft) -> Result<String> {
        Ok(self
            .client
            .create_proposal(minka_client::ProposalDraft {
                title: draft.title,
                description: draft.description,
                zone: draft.zone,
                category: draft.category,
                beneficiaries: draft.beneficiaries,
                estimated_cost: draft.estimated_cost,
                cofinancing: draft.cofinancing,
            })?
            .to_string())
    }

    pub fn create_acta(&self, draft: ActaDraft) -> Result<String> {
        let kind = draft.kind.parse().map_err(|_| {
            MinkaException::InvalidInput(format!("unknown acta kind {:?}", draft.kind))
        })?;
        let user = |u: &str| {
            u.parse()
                .map_err(|e| MinkaException::InvalidInput(format!("user id {u:?}: {e}")))
        };
        let attendees = draft
            .attendees
            .iter()
            .map(|a| {
                Ok((
                    user(&a.user)?,
                    minka_client::Attendee {
                        name: a.name.clone(),
                        organization: a.organization.clone(),
                        votes: a.votes,
                    },
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let committee_members = draft
            .committee_members
            .iter()
            .map(|u| user(u))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .client
            .create_acta(minka_client::ActaDraft {
                title: draft.title,
                kind,
                date: draft.date,
                place: draft.place,
                committee_members,
                attendees,
                agreements: draft.agreements,
            })?
            .to_string())
    }

    pub fn create_observation(&self, draft: ObservationDraft) -> Result<String> {
        Ok(self
            .client
            .create_observation(minka_client::ObservationDraft {
                target: doc_id(&draft.target)?,
                kind: draft.kind,
                description: draft.description,
                evidence: draft.evidence,
            })?
            .to_string())
    }

    pub fn set_title(&self, id: String, title: String) -> Result<()> {
        self.client.set_title(&doc_id(&id)?, &title)?;
        Ok(())
    }

    pub fn set_description(&self, id: String, text: String) -> Result<()> {
        self.client.set_description(&doc_id(&id)?, &text)?;
        Ok(())
    }

    /// Céntimos.
    pub fn set_estimated_cost(&self, id: String, centimos: i64) -> Result<()> {
        self.client.set_estimated_cost(&doc_id(&id)?, centimos)?;
        Ok(())
    }

    pub fn set_proposal_status(&self, id: String, status: ProposalStatus) -> Result<()> {
        self.client
            .set_proposal_status(&doc_id(&id)?, status.into())?;
        Ok(())
    }

    pub fn support(&self, id: String) -> Result<()> {
        self.client.support(&doc_id(&id)?)?;
        Ok(())
    }

    pub fn comment(&self, id: String, text: String) -> Result<()> {
        self.client.comment(&doc_id(&id)?, &text)?;
        Ok(())
    }

    pub fn sign_acta(&self, id: String) -> Result<()> {
        self.client.sign_acta(&doc_id(&id)?)?;
        Ok(())
    }

    pub fn respond(&self, id: String, text: String) -> Result<()> {
        self.client.respond(&doc_id(&id)?, &text)?;
        Ok(())
    }

    pub fn proposal(&self, id: String) -> Result<ProposalView> {
        let p = self.client.proposal(&doc_id(&id)?)?;
        Ok(ProposalView {
            id,
            district: p.header.district.to_string(),
            process_year: p.header.process_year,
            title: p.title,
            description: p.description,
            zone: p.zone,
            category: p.category,
            beneficiaries: p.beneficiaries,
            estimated_cost: p.estimated_cost,
            cofinancing: p.cofinancing,
            status: p.status.into(),
            created_by: p.created_by.to_string(),
            coauthors: p.coauthors.iter().map(ToString::to_string).collect(),
            supporters: p.supporters.keys().map(ToString::to_string).collect(),
            comments: comments(p.comments),
        })
    }

    pub fn acta(&self, id: String) -> Result<ActaView> {
        let a = self.client.acta(&doc_id(&id)?)?;
        Ok(ActaView {
            id,
            title: a.title,
            kind: a.kind.as_str().to_string(),
            status: a.status.as_str().to_string(),
            date: a.date,
            place: a.place,
            agreements: a.agreements,
            signed_by: a.signatures.keys().map(ToString::to_string).collect(),
        })
    }

    pub fn observation(&self, id: String) -> Result<ObservationView> {
        let o = self.client.observation(&doc_id(&id)?)?;
        Ok(ObservationView {
            id,
            target: o.target,
            kind: o.kind,
            description: o.description,
            status: o.status.as_str().to_string(),
            responses: comments(o.responses),
        })
    }

    /// The document as JSON (the shape the review API returns in `state`).
    pub fn json(&self, id: String) -> Result<String> {
        Ok(self.client.json(&doc_id(&id)?)?.to_string())
    }

    /// Every document held on the phone, with its sync status.
    pub fn list(&self) -> Vec<DocSummary> {
        self.client
            .list()
            .into_iter()
            .map(|d| DocSummary {
                id: d.id.to_string(),
                doc_type: d.doc_type.as_str().to_string(),
                title: d.title,
                status: d.status,
                sync: d.sync.into(),
            })
            .collect()
    }

    /// The ids the district index lists (as last received).
    pub fn district_index(&self) -> Vec<String> {
        self.client
            .district_index()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    pub fn status(&self, id: String) -> Result<SyncInfo> {
        let s = self.client.status(&doc_id(&id)?)?;
        Ok(SyncInfo {
            status: s.status.into(),
            unacknowledged: s.unacknowledged as u64,
            last_synced: s
                .last_synced
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64),
        })
    }

    pub fn rejections(&self, id: String) -> Result<Vec<Rejection>> {
        Ok(self
            .client
            .rejections(&doc_id(&id)?)
            .into_iter()
            .map(|r| Rejection {
                change: r.change.to_string(),
                reason: r.reason,
                at: r.at,
            })
            .collect())
    }

    /// Drops the refused changes and what was built on them; returns how many were dropped.
    pub fn discard_rejected(&self, id: String) -> Result<u64> {
        Ok(self.client.discard_rejected(&doc_id(&id)?)? as u64)
    }

    /// Writes the refused content again as a new change, if this user may make it now.
    pub fn reapply_rejected(&self, id: String) -> Result<()> {
        self.client.reapply_rejected(&doc_id(&id)?)?;
        Ok(())
    }

    /// The concurrent values of a field (`path` of map keys from the root).
    pub fn get_all(&self, id: String, path: Vec<String>) -> Result<Vec<ConcurrentValue>> {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        Ok(self
            .client
            .get_all(&doc_id(&id)?, &path)?
            .into_iter()
            .map(|v| ConcurrentValue {
                json: v.value.to_string(),
                actor: v.actor,
                winner: v.winner,
            })
            .collect())
    }

    /// Starts syncing with `url` (`wss://…/sync`) in the background; returns at once.
    pub fn connect(&self, url: String, token: String) -> Result<()> {
        let _in_runtime = self.rt.enter();
        self.client.connect(&url, &token)?;
        Ok(())
    }

    /// Stops syncing and waits until the connection is closed.
    pub async fn disconnect(&self) {
        self.client.disconnect().await;
    }

    /// Waits until the server holds every change of a document; false after `timeout_millis`;
    /// `MinkaException.RejectedByServer` if the server refuses one of its changes.
    pub async fn await_synced(&self, id: String, timeout_millis: u64) -> Result<bool> {
        let id = doc_id(&id)?;
        let mut events = self.client.events();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_millis);
        loop {
            match self.client.status(&id).map(|s| s.status) {
                Ok(DocStatus::Synced) => return Ok(true),
                Ok(DocStatus::Rejected { reason }) => {
                    return Err(MinkaException::RejectedByServer(reason))
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return Ok(false),
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => return Ok(false),
            }
        }
    }

    /// The OS says the network is back: retry now.
    pub fn network_changed(&self) {
        self.client.network_changed();
    }

    pub fn connection_state(&self) -> ConnectionState {
        self.client.connection_state().into()
    }

    /// Delivers every event to `listener`, in order, on a binding thread (several listeners may
    /// be added; each gets every event).
    pub fn add_listener(&self, listener: Arc<dyn EventListener>) {
        let mut events = self.client.events();
        let task = self.rt.spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => listener.on_event(e.into()),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        });
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Stops the listeners and the connection; the store closes when the object is released
    /// (`close()` / `use {}` in Kotlin).
    pub async fn shutdown(&self) {
        for t in self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
        self.client.disconnect().await;
    }
}
