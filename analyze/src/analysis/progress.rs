//! Progress of the pipeline's long step (reading and reducing every layer, with its
//! bootstrap) on stderr: a bar on a terminal; elsewhere (a Slurm job's log) a line
//! every 30 seconds, so a run of minutes says where it is without flooding a log.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const LINE_EVERY: Duration = Duration::from_secs(30);

pub(super) struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    start: Instant,
    last_line: Instant,
    every: Duration,
}

impl Progress {
    /// `total` layers (caches x poolings x sampled layers) to reduce.
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("reducing layers {bar:40} {pos}/{len} eta {eta}")
            {
                bar.set_style(style);
            }
            bar
        });
        Self::with(bar, total, LINE_EVERY)
    }

    fn with(bar: Option<ProgressBar>, total: u64, every: Duration) -> Self {
        let now = Instant::now();
        Progress {
            bar,
            total,
            done: 0,
            start: now,
            last_line: now,
            every,
        }
    }

    /// `n` more layers reduced.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.set_position(self.done),
            None => {
                if let Some(line) = self.line() {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// The log line due now, if one is.
    fn line(&mut self) -> Option<String> {
        if self.last_line.elapsed() < self.every || self.done >= self.total {
            return None;
        }
        self.last_line = Instant::now();
        let spent = self.start.elapsed().as_secs_f64();
        let left = spent * (self.total - self.done) as f64 / self.done.max(1) as f64;
        Some(format!(
            "analyze: {} of {} layers reduced ({:.0}%), {spent:.0} s so far, about {left:.0} s left",
            self.done,
            self.total,
            100.0 * self.done as f64 / self.total.max(1) as f64
        ))
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_gets_a_line_per_interval_and_none_at_the_end() {
        let mut p = Progress::with(None, 40, Duration::from_millis(20));
        p.done = 10;
        assert_eq!(p.line(), None, "not yet due");
        std::thread::sleep(Duration::from_millis(25));
        let line = p.line().expect("due");
        assert!(
            line.starts_with("analyze: 10 of 40 layers reduced (25%)"),
            "{line}"
        );
        assert_eq!(p.line(), None, "just printed");
        std::thread::sleep(Duration::from_millis(25));
        p.done = 40;
        assert_eq!(p.line(), None, "finished: the summary follows");
    }
}
