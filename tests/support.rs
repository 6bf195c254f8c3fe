//! Shared helpers of the end-to-end tests (`e2e` lib).
//!
//! The tests run the real binaries, which `binary()` builds first with the same
//! cargo, profile and target folder.

/// Locating (and building) binaries, fixtures and the committed data; running `extract`; reading references.
pub mod extract_support;
pub use extract_support::*;

/// The analyze binaries and synthetic caches (`synth-cache`).
pub mod analyze_support;
pub use analyze_support::*;
