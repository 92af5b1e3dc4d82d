//! Shared helpers for Minka system tests and the load generator.

pub mod harness;
pub mod loadgen;
