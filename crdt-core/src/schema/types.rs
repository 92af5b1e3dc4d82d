//! Document types and status enums of schema v1, with their wire spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a document could not be read as schema v1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("missing field `{0}`")]
    Missing(String),
    #[error("field `{path}` has the wrong type: expected {expected}, found {found}")]
    WrongType {
        path: String,
        expected: &'static str,
        found: String,
    },
    #[error("field `{path}` has unknown value {value:?}")]
    UnknownValue { path: String, value: String },
    #[error("document is a `{found}`, expected a `{expected}`")]
    WrongDocType { expected: DocType, found: String },
    #[error("unsupported schemaVersion {0} (this server reads 1)")]
    UnsupportedVersion(i64),
    #[error("invalid field `{path}`: {reason}")]
    Invalid { path: String, reason: String },
}

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling stored in documents.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(other.to_string()),
                }
            }
        }
    };
}

wire_enum!(
    /// The `type` at a document's root.
    DocType {
        Proposal => "proposal",
        Acta => "acta",
        Observation => "observation",
        Process => "process",
        Index => "index",
    }
);

wire_enum!(
    /// Proposal status: draft → submitted → in_evaluation → observed ⇄ submitted,
    /// eligible | ineligible → prioritized | not_prioritized; withdrawn (by authors, before in_evaluation).
    ProposalStatus {
        Draft => "draft",
        Submitted => "submitted",
        InEvaluation => "in_evaluation",
        Observed => "observed",
        Eligible => "eligible",
        Ineligible => "ineligible",
        Prioritized => "prioritized",
        NotPrioritized => "not_prioritized",
        Withdrawn => "withdrawn",
    }
);

wire_enum!(
    /// Acta status: draft → signing → sealed.
    ActaStatus {
        Draft => "draft",
        Signing => "signing",
        Sealed => "sealed",
    }
);

wire_enum!(
    /// Kind of meeting an acta records.
    ActaKind {
        Workshop => "workshop",
        Formalization => "formalization",
        CommitteeSession => "committee_session",
    }
);

wire_enum!(
    /// Observation status: open → sent → answered → closed | escalated.
    ObservationStatus {
        Open => "open",
        Sent => "sent",
        Answered => "answered",
        Closed => "closed",
        Escalated => "escalated",
    }
);

wire_enum!(
    /// Phase of a district's participatory budgeting process (DOMAIN.md): preparation →
    /// concertation → coordination → formalization → accountability.
    ProcessPhase {
        Preparation => "preparation",
        Concertation => "concertation",
        Coordination => "coordination",
        Formalization => "formalization",
        Accountability => "accountability",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_their_wire_spelling() {
        for s in ProposalStatus::ALL {
            assert_eq!(s.as_str().parse::<ProposalStatus>().unwrap(), *s);
        }
        assert_eq!(
            "in_evaluation".parse::<ProposalStatus>(),
            Ok(ProposalStatus::InEvaluation)
        );
        assert_eq!("sealed".parse::<ActaStatus>(), Ok(ActaStatus::Sealed));
        assert_eq!("foo".parse::<DocType>(), Err("foo".to_string()));
    }
}
