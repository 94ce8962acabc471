//! dotkv's binaries: `dotkv-server`, a node, and `dotkv`, the client CLI.
//!
//! This library holds what the two `main`s share and what is worth testing without a
//! process: configuration loading ([`config`]), log setup ([`logging`]), the node's
//! start-up and shutdown ([`node`]), following a membership change ([`admin`]), the load
//! generator ([`bench`]) and making a cluster CA and node certificates ([`certs`]). The Dynamo machinery itself lives in the `dotkv-*`
//! crates; nothing here decides anything about data.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod admin;
pub mod bench;
pub mod certs;
pub mod config;
pub mod logging;
pub mod node;
