//! The `dotkv` facade package.
//!
//! It re-exports the workspace crates so that the cluster tests in `tests/` and the
//! criterion benchmarks in `benches/` have one dependency to name, and holds the fuzz
//! targets' bodies ([`fuzz`]), shared by `fuzz/` and the corpus replay in `tests/`.

pub use dotkv_ring as ring;
pub use dotkv_storage as storage;
pub use dotkv_versioning as versioning;

pub mod fuzz;
