//! The Minka load generator: simulated phones speaking automerge-repo v1 over WebSocket, run
//! against minka and the two reference peers (the JavaScript sync server and samod).
//! See BENCHMARKS.md for the workloads and how to run them.

pub mod measure;
pub mod phone;
pub mod proposal;
pub mod report;
pub mod server;
pub mod stock;
pub mod workloads;
