//! Shared helpers of the end-to-end tests (`e2e` lib).
//!
//! The binaries must be built first: `cargo build --release --workspace &&
//! cargo test --release --workspace`.

/// Locating binaries, fixtures and `../shared`; running `extract`; reading references.
pub mod extract_support;
pub use extract_support::*;

/// The analyze binaries and synthetic caches (`synth-cache`).
pub mod analyze_support;
pub use analyze_support::*;
