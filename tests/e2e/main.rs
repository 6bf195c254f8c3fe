//! The end-to-end tests, one module per area, in one test binary: each binary links the
//! whole of extract and schemas (arrow, parquet, ONNX Runtime's bindings, tokenizers), so
//! one binary is linked once where sixteen were linked one by one. A module runs alone by
//! its path: `cargo test --release --workspace --test e2e golden::`. The shared helpers are
//! the `e2e` library (`tests/support.rs`).

mod analyze_errors;
mod analyze_figures;
mod cka_exact;
mod dataset_card;
mod extract_errors;
mod golden;
mod grid;
mod headline;
mod house;
mod parity;
mod provenance;
mod remote;
mod resume;
mod seed_exact;
mod shard;
mod sidecar;
