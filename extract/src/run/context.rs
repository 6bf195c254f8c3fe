//! What every step of a run reads once its session is open: the inputs as checked
//! and resolved, passed as one value instead of ten arguments.

use std::path::Path;

use schemas::Pooling;

use crate::inputs::dataset::Dataset;
use crate::inputs::tokenize::TextTokenizer;
use crate::model::model_dir::ModelDir;
use crate::run::options::Options;
use crate::store::chunks::Settings;

#[derive(Clone, Copy)]
pub(crate) struct RunContext<'a> {
    pub opts: &'a Options,
    pub data: &'a Dataset,
    /// The cache folder's name (a shard's suffix included) and its path.
    pub name: &'a str,
    pub cache_dir: &'a Path,
    /// The poolings to store, each once.
    pub poolings: &'a [Pooling],
    pub model: &'a ModelDir,
    pub tok: &'a TextTokenizer,
    /// Every statement's token ids, by global id (= index into `data.statements`).
    pub tokens: &'a [Vec<i64>],
    /// The statements this cache holds, by global id, ascending.
    pub ids: &'a [u32],
    /// How the chunks are computed: the session's provider and the batching.
    pub settings: &'a Settings,
}
