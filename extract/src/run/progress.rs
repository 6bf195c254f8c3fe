//! Progress while the statements run: a bar on a terminal, else a plain line now
//! and then (a log file gets no control characters).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress on a terminal bar, else a plain line now and then.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    last_line: Instant,
}

impl Progress {
    pub(crate) fn new(total: usize, done: usize) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new(total as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{bar:40} {pos}/{len} statements {per_sec} eta {eta}")
            {
                b.set_style(style);
            }
            b.set_position(done as u64);
            b
        });
        Progress {
            bar,
            total,
            last_line: Instant::now(),
        }
    }

    pub(crate) fn update(&mut self, done: usize, rate: f64) {
        match &self.bar {
            Some(b) => b.set_position(done as u64),
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(10) || done == self.total {
                    eprintln!("extract: {done}/{} statements ({rate:.1}/s)", self.total);
                    self.last_line = Instant::now();
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
