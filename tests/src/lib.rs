//! Shared helpers for Minka system tests and the load generator.

pub mod chaos;
pub mod haproxy;
pub mod harness;
pub mod loadgen;
pub mod pg;
