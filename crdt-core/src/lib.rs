//! Sans-IO core of Minka: identifiers, document schema v1 (builders, typed views, validation),
//! the permission function, change history and the automerge-repo v1 wire codec.
//!
//! Nothing here does network, disk or threads: the server and the client SDK feed it bytes and
//! documents and execute what it decides, so both share one definition of ids, schema and wire.

pub mod engine;
pub mod history;
pub mod ids;
pub mod permissions;
pub mod wire;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use ids::{DistrictScope, DocumentId, IdError, Role, Ubigeo, UserId, PROCESS_YEARS};
pub mod demo;
pub mod schema;
