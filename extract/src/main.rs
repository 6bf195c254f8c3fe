use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use extract::batch::Batching;
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
        default_value = "mean,mean_skip_first,last"
    )]
    poolings: Vec<Pooling>,
    /// Resume an interrupted run even if it was made with another execution provider
    /// or batching (the manifest records each chunk's).
    #[arg(long)]
    force_resume: bool,
    /// Accept parity-probe errors up to this multiple of the parity bound (see
    /// extract/src/parity.rs); recorded in the manifest.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    parity_slack: f64,
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
    let opts = extract::Options {
        model: cli.model,
        dataset: cli.dataset,
        out: cli.out,
        name: cli.name,
        device: cli.device,
        batching: Batching {
            max_rows: match (cli.batch_size, cli.max_tokens) {
                (Some(rows), _) => rows as usize,
                (None, Some(tokens)) => tokens as usize,
                (None, None) => 32,
            },
            max_tokens: cli.max_tokens.map(|t| t as usize),
        },
        poolings: cli.poolings,
        force_resume: cli.force_resume,
        parity_slack: cli.parity_slack,
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
