//! `synth-cache`: parses the command line and writes the caches (the library,
//! `synth_cache`, says what they hold); `synth-cache --help` lists the options.

use clap::Parser;
use synth_cache::Options;

/// Writes a synthetic cache (one folder per model) with a planted UA–preference
/// structure, deterministic from --seed.
#[derive(Parser)]
#[command(
    name = "synth-cache",
    version,
    about = "Writes a synthetic cache with a planted UA-preference structure (tests and benchmarks)"
)]
struct Cli {
    #[command(flatten)]
    options: Options,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    synth_cache::write_caches(&cli.options, |dir| println!("wrote {}", dir.display()))
}
