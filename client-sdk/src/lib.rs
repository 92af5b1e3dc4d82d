//! Minka client SDK.
