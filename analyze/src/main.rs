//! `analyze [run flags]` (the analysis, default), `analyze convert ...` and `analyze index ...`:
//! parses the command line, calls the library and prints what it returns.

use std::path::PathBuf;
use std::process::ExitCode;

use analyze::AnalysisSettings;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "analyze",
    version,
    about = "Answers: does the layer range where |r| peaks shift with model size? (reads extract's Parquet caches; no GPU)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    // Before the subcommands, which count in clap's display order: the flags then
    // list as in `analyze run --help` (see `AnalysisSettings::all_poolings`).
    #[command(flatten)]
    run: Option<AnalysisSettings>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The analysis (also the default when no subcommand is given).
    Run(AnalysisSettings),
    /// Write each model's pooled embeddings and NLLs for PyTorch/numpy users.
    // `export`, its old name, still works for old scripts; export is HF -> ONNX.
    #[command(alias = "export")]
    Convert(ConvertArgs),
    /// Add the sidecar (grams.parquet) to caches made before extract wrote
    /// it, or rebuild a stale one; the analysis then reads no embeddings.
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

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Safetensors,
}

#[derive(Args)]
struct ConvertArgs {
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

fn run_and_print(settings: AnalysisSettings) -> anyhow::Result<()> {
    let a = analyze::run(&settings)?;
    for w in &a.warnings {
        eprintln!("note: {w}");
    }
    println!("{}", analyze::report::headline(&a));
    for b in analyze::report::evidence(&a) {
        println!("- {b}");
    }
    println!(
        "wrote {}/{{results.json, report.md, layer_correlations.csv, {}}}",
        settings.out.display(),
        analyze::figures::figure_files(&a)
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
        Some(Command::Convert(e)) => match e.format {
            Format::Safetensors => analyze::convert::convert_to_safetensors(
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
            analyze::cache::index::index(&i.cache, i.models.as_deref()).map(|lines| {
                for l in lines {
                    println!("{l}");
                }
            })
        }
        Some(Command::Run(r)) => run_and_print(r),
        None => run_and_print(
            cli.run
                .expect("clap requires the run flags without a subcommand"),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
