//! Document schema v1: the document types, their status machines, builders that write a valid
//! new document, typed read views, typed edits, validation warnings and JSON rendering.
//!
//! Every document's root has `type`, `schemaVersion` (1), `district` (ubigeo) and `processYear`.
//! Amounts are integers in céntimos; sets keyed by user id are maps `userId -> value`.
//!
//! - Builders ([`NewProposal`], [`NewActa`], [`NewObservation`], [`NewProcess`], [`NewIndex`])
//!   implement [`NewDocument`]: `write_into` a transaction or `create` a one-change document.
//!   Prose (`title`, `description`, comment and response `text`, `agreements`, evaluation
//!   `notes`) is written as automerge Text, enums and ids as scalar strings, whole numbers as
//!   `int`. Every container (`supporters`, `comments`, `evaluation`, `scores`, `signatures`, ...)
//!   exists from creation, so concurrent first writes merge instead of racing to create it.
//! - Views ([`Proposal`], [`Acta`], [`Observation`], [`Process`], [`Index`], [`DocumentHeader`],
//!   [`AnyDocument`]) have `read(&doc)` and `read_at(&doc, &heads)` and accept what other clients
//!   write: Text or scalar strings; int, uint or integral f64; automerge timestamps (ms) for times.
//! - [`Edit`] and [`apply_edit`]/[`apply_edits`]: small typed changes, committed with a message
//!   and a time.
//! - [`warnings`] and [`budget_violations`]: checks that never block a merge; the latter is what
//!   the server enforces when sealing an acta.
//! - [`to_json`] / [`to_json_at`]: deterministic JSON of any document.

/// `read` and `read_at` for a view type with a `read_from(&Reader)` constructor.
macro_rules! impl_read {
    ($ty:ident) => {
        impl $ty {
            /// Reads the current state; an error names the offending field's path.
            pub fn read(doc: &impl automerge::ReadDoc) -> Result<Self, SchemaError> {
                Self::read_from(&Reader::new(doc, None))
            }

            /// Reads the state as at `heads`.
            pub fn read_at(
                doc: &impl automerge::ReadDoc,
                heads: &[automerge::ChangeHash],
            ) -> Result<Self, SchemaError> {
                Self::read_from(&Reader::new(doc, Some(heads)))
            }
        }
    };
}
pub(crate) use impl_read;

mod acta;
mod edit;
mod header;
mod index;
mod json;
mod observation;
mod process;
mod proposal;
mod read;
mod types;
mod validate;

pub use acta::{Acta, Attendee, NewActa, PrioritizedEntry, Signature};
pub use edit::{apply_edit, apply_edits, Edit, EditError};
pub use header::{commit_options, AnyDocument, DocumentHeader, NewDocument};
pub use index::{Index, IndexEntry, NewIndex};
pub use json::{object_to_json, scalar_to_json, to_json, to_json_at};
pub use observation::{NewObservation, Observation};
pub use process::{Criterion, NewProcess, Process};
pub use proposal::{Comment, Evaluation, NewProposal, Proposal};
pub use types::{
    ActaKind, ActaStatus, DocType, ObservationStatus, ProcessPhase, ProposalStatus, SchemaError,
};
pub use validate::{
    acta_warnings, budget_violations, format_soles, observation_warnings, process_warnings,
    proposal_warnings, warnings, BudgetContext, Warning, WarningCode,
};

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

#[cfg(test)]
mod tests;
