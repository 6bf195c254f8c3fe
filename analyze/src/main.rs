//! `analyze [run flags]` (the analysis, default) and `analyze export ...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use schemas::Pooling;

#[derive(Parser)]
#[command(
    name = "analyze",
    version,
    about = "Answers: does the layer range where |r| peaks shift with model size? (reads extract's Parquet caches; no GPU)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The analysis (also the default when no subcommand is given).
    Run(RunArgs),
    /// Write each model's pooled embeddings and NLLs for PyTorch/numpy users.
    Export(ExportArgs),
    /// Add the compact statistics (grams.parquet) to caches made before extract wrote
    /// them, or rebuild a stale one; the analysis then reads no embeddings.
    Index(IndexArgs),
}

#[derive(Args)]
struct IndexArgs {
    /// Cache folder holding one folder per model.
    #[arg(long)]
    cache: PathBuf,
    /// Only these model folders (comma-separated).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Cache folder holding one folder per model (written by extract).
    #[arg(long, required = true)]
    cache: Option<PathBuf>,
    /// Output folder for results.json, report.md, layer_correlations.csv and plots.
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Only these model folders (comma-separated).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Analyse every Nth layer plus the last (the seed used 4).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    layer_step: u32,
    /// Pooling that answers the question: mean_skip_first (seed-compatible), mean or last.
    #[arg(long, default_value = "mean_skip_first")]
    pooling: Pooling,
    /// Cosine arithmetic: exact (float64) or seed (the notebook's float32 kernel, for parity with its numbers).
    #[arg(long, default_value = "exact")]
    arithmetic: analyze::uniformity::Arithmetic,
    /// Pair-level view: take cosines around the raw normalised vectors (none) or centre them on the category mean (category).
    #[arg(long, default_value = "none")]
    pair_centring: analyze::pairs::Centring,
    /// Stratified pair-bootstrap resamples (0 turns the bootstrap off).
    #[arg(long, default_value_t = 10_000)]
    bootstrap: usize,
    /// Seed of the bootstrap and of Monte Carlo permutations.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Peak-position std (points of % depth) below which peaks count as stable (the seed's 10).
    // allow_hyphen_values: `--stability-threshold -5` (or -inf) reaches the parser and
    // is refused with its reason rather than read as an unknown flag `-5`.
    #[arg(long, default_value_t = 10.0, value_parser = positive_finite, allow_hyphen_values = true)]
    stability_threshold: f64,
    /// Compare models extracted from different datasets (different dataset sha256).
    #[arg(long)]
    allow_mixed_datasets: bool,
    /// Also analyse the cache's other poolings (a sensitivity section in the report; about 3x the reading time).
    #[arg(long)]
    all_poolings: bool,
    /// Monte Carlo permutations when there are more than 8 categories (else all n! are used).
    #[arg(long, default_value_t = 10_000)]
    permutations: usize,
    /// Draw --permutations random orderings even with 8 or fewer categories. It cannot
    /// resolve p below the exact floor 1/n! (the draws sample the same n! orderings);
    /// it gives the p-value that tools which always sample would report.
    #[arg(long)]
    monte_carlo_permutations: bool,
    /// With training checkpoints: the step (stepN) whose caches the cross-size verdict compares [default: the latest step common to all sizes].
    #[arg(long, value_parser = step_revision)]
    revision: Option<u64>,
    /// With training checkpoints: resamples of the training view, the same at every step (0 turns it off).
    #[arg(long, default_value_t = 1_000)]
    training_bootstrap: usize,
    /// Read the embeddings even where a cache has compact statistics (grams.parquet);
    /// `--arithmetic seed` always reads them.
    #[arg(long)]
    from_embeddings: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Safetensors,
}

#[derive(Args)]
struct ExportArgs {
    #[arg(long, value_enum, default_value = "safetensors")]
    format: Format,
    #[arg(long)]
    cache: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    #[arg(long)]
    allow_mixed_datasets: bool,
}

/// `--stability-threshold`: a std of peak positions is >= 0, so a threshold <= 0 or
/// NaN always says "shifts" and infinity always "stable".
fn positive_finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number of depth points, e.g. 10".to_string())?;
    if !v.is_finite() || v <= 0.0 {
        return Err("must be a finite number > 0 (points of % depth; the seed used 10)".into());
    }
    Ok(v)
}

/// `--revision`: a training step as Pythia names its revisions.
fn step_revision(s: &str) -> Result<u64, String> {
    schemas::checkpoint::step_of(s.trim())
        .ok_or_else(|| format!("'{s}' is not stepN (a training step, e.g. step143000)"))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = analyze::Settings {
        cache: args.cache.expect("required by clap"),
        out: args.out.expect("required by clap"),
        models: args.models,
        layer_step: args.layer_step,
        pooling: args.pooling,
        arithmetic: args.arithmetic,
        pair_centring: args.pair_centring,
        bootstrap: args.bootstrap,
        seed: args.seed,
        stability_threshold: args.stability_threshold,
        allow_mixed_datasets: args.allow_mixed_datasets,
        permutations: args.permutations,
        monte_carlo_permutations: args.monte_carlo_permutations,
        other_poolings: args.all_poolings,
        revision: args.revision,
        training_bootstrap: args.training_bootstrap,
        from_embeddings: args.from_embeddings,
    };
    let a = analyze::run(&settings)?;
    for w in &a.warnings {
        eprintln!("note: {w}");
    }
    println!("{}", analyze::report::answer_paragraph(&a));
    println!(
        "wrote {}/{{results.json, report.md, layer_correlations.csv, {}}}",
        settings.out.display(),
        analyze::plots::figure_files(&a)
    );
    Ok(())
}

/// Parses the command line; a usage error becomes one line (clap's first line, which
/// names the flag and the problem) and exit status 2; help and version print as usual.
fn parse_cli() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
        _ => {
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error");
            eprintln!("{first} (see analyze --help)");
            ExitCode::from(2)
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let result = match cli.command {
        Some(Command::Export(e)) => match e.format {
            Format::Safetensors => analyze::export::export_safetensors(
                &e.cache,
                &e.out,
                e.models.as_deref(),
                e.allow_mixed_datasets,
            )
            .map(|(paths, notes)| {
                for n in notes {
                    eprintln!("note: {n}");
                }
                for p in paths {
                    println!("wrote {}", p.display());
                }
            }),
        },
        Some(Command::Index(i)) => {
            analyze::index::index(&i.cache, i.models.as_deref()).map(|lines| {
                for l in lines {
                    println!("{l}");
                }
            })
        }
        Some(Command::Run(r)) => run(r),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
