//! What a run reads before the model: the statement dataset, its tokens, the
//! batches they are run in, the shard of them this cache holds and the model's
//! place in the grid of sizes and checkpoints.

pub mod batch;
pub mod dataset;
pub mod grid_place;
pub mod shard;
pub mod tokenize;
