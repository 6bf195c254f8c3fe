use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use extract::runtime::DeviceChoice;
use schemas::Pooling;

/// Run an ONNX-exported model over a statement dataset once and cache every
/// layer's pooled embeddings and each statement's NLL as Parquet.
#[derive(Parser, Debug)]
#[command(name = "extract", version)]
struct Cli {
    /// Model directory written by scripts/export (model.onnx, tokenizer.json, config.json, export.json).
    #[arg(long)]
    model: PathBuf,
    /// Dataset JSON in the seed schema: {category: {description, expected_effect, pairs: [[A, B], ...]}}.
    #[arg(long)]
    dataset: PathBuf,
    /// Cache root; the cache goes to OUT/NAME.
    #[arg(long)]
    out: PathBuf,
    /// Cache folder name [default: the model directory's name].
    #[arg(long)]
    name: Option<String>,
    /// auto (CUDA if the ONNX Runtime has it, else CPU), cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Statements per forward pass (grouped by token length, right-padded).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Poolings to store, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mean,mean_skip_first,last"
    )]
    poolings: Vec<Pooling>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = extract::Options {
        model: cli.model,
        dataset: cli.dataset,
        out: cli.out,
        name: cli.name,
        device: cli.device,
        batch_size: cli.batch_size,
        poolings: cli.poolings,
    };
    match extract::run(&opts) {
        Ok(summary) => {
            for line in summary.lines() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", extract::util::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
