use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use extract::inputs::batch::Batching;
use extract::inputs::grid_place::{self, PlaceFlags};
use extract::inputs::shard::Shard;
use extract::merge::MergeOptions;
use extract::model::runtime::DeviceChoice;
use schemas::Pooling;

/// Run an ONNX-exported model over a statement dataset once and cache every
/// layer's pooled embeddings and each statement's NLL as Parquet.
#[derive(Parser, Debug)]
#[command(
    name = "extract",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Model directory written by scripts/export (model.onnx, tokenizer.json, config.json, export.json).
    #[arg(long, required = true)]
    model: Option<PathBuf>,
    /// Dataset JSON in the seed schema: {category: {description, expected_effect, pairs: [[A, B], ...]}}.
    #[arg(long, required = true)]
    dataset: Option<PathBuf>,
    /// Cache root; the cache goes to OUT/NAME.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Cache folder name [default: the model directory's name].
    #[arg(long)]
    name: Option<String>,
    /// auto (CUDA if the ONNX Runtime has it, else CPU), cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Most statements per forward pass (grouped by token length, right-padded)
    /// [default: 32, or no limit but --max-tokens when that is given].
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: Option<u32>,
    /// Most tokens per forward pass, padding included: batches of many short or few
    /// long statements, each about the same work.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: Option<u32>,
    /// Poolings to store, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = Pooling::LIST
    )]
    poolings: Vec<Pooling>,
    /// Resume an interrupted run even if it was made with another execution provider
    /// or batching (the manifest records each chunk's).
    #[arg(long)]
    force_resume: bool,
    /// Save finished chunks to disk (so that a killed run resumes from them) at
    /// least every SECONDS; the ones finished since are held in memory (up to a
    /// quarter of it), so a run shorter than this writes its vectors only once.
    /// 0: save each chunk as it finishes.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, default_value_t = 10.0, value_parser = non_negative_seconds)]
    save_every: f64,
    /// Accept parity-probe errors up to this multiple of the parity bound (see
    /// extract/src/parity.rs); recorded in the manifest.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    parity_slack: f64,
    /// Extract only shard I of N (0-based): the pairs whose global index % N == I,
    /// into OUT/NAME.shard-I-of-N; join the shards with `extract merge`.
    #[arg(long, value_name = "I/N", allow_hyphen_values = true)]
    shard: Option<Shard>,
    /// Model series for the manifest (e.g. pythia) [default: from the model id in
    /// export.json, where one token of its last part is a size: EleutherAI/pythia-410m -> pythia].
    #[arg(long, value_parser = grid_place::non_empty)]
    series: Option<String>,
    /// Model size within the series (e.g. 410m) [default: from the model id, as --series].
    #[arg(long, value_parser = grid_place::non_empty)]
    size: Option<String>,
    /// Checkpoint revision (e.g. step143000; stepN also sets the manifest's step)
    /// [default: export.json's; a different one is refused].
    #[arg(long, value_parser = grid_place::non_empty)]
    revision: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join the complete shard caches of one extraction (extract --shard) into the
    /// cache an unsharded run writes.
    Merge {
        /// Cache root; the merged cache goes to OUT/NAME.
        #[arg(long)]
        out: PathBuf,
        /// Merged cache folder name.
        #[arg(long)]
        name: String,
        /// The shard cache folders, every shard of the split exactly once.
        #[arg(value_name = "SHARD_DIR", required = true)]
        shards: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's own text spans several lines; the first says what is wrong.
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            eprintln!("{} (see --help)", first.trim_end());
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Merge { out, name, shards }) = cli.command {
        return finish(extract::merge::merge(&MergeOptions { out, name, shards }).map(|l| vec![l]));
    }
    // clap requires these without a subcommand; no panic if that ever changes.
    let (Some(model), Some(dataset), Some(out)) = (cli.model, cli.dataset, cli.out) else {
        eprintln!("error: --model, --dataset and --out are required (see --help)");
        return ExitCode::from(2);
    };
    let opts = extract::run::options::Options {
        model,
        dataset,
        out,
        name: cli.name,
        device: cli.device,
        batching: Batching {
            batch_size: match (cli.batch_size, cli.max_tokens) {
                (Some(rows), _) => rows as usize,
                (None, Some(tokens)) => tokens as usize,
                (None, None) => 32,
            },
            max_tokens: cli.max_tokens.map(|t| t as usize),
        },
        poolings: cli.poolings,
        force_resume: cli.force_resume,
        parity_slack: cli.parity_slack,
        shard: cli.shard,
        place: PlaceFlags {
            series: cli.series,
            size: cli.size,
            revision: cli.revision,
        },
        save_every: std::time::Duration::from_secs_f64(cli.save_every),
    };
    finish(extract::run::run(&opts).map(|summary| summary.lines()))
}

/// A duration in seconds: finite and at least 0.
fn non_negative_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=1e9).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds from 0 to 1e9")),
    }
}

/// Prints the closing lines, or the error on one line.
fn finish(result: anyhow::Result<Vec<String>>) -> ExitCode {
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error chain on one line: `outer: inner: root`, skipping repeats.
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
