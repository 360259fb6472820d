//! Progress of a long command (`publish`, `replay`): a bar on a terminal,
//! plain lines now and then otherwise (a log file or a pipe gets no control
//! characters).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often a plain progress line is written at most.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub enum Progress {
    Bar(ProgressBar),
    Plain {
        what: &'static str,
        total: u64,
        done: u64,
        started: Instant,
        last: Instant,
    },
}

impl Progress {
    /// Progress over `total` items, on standard error.
    pub fn new(what: &'static str, total: u64) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            Progress::Bar(bar)
        } else {
            let now = Instant::now();
            Progress::Plain {
                what,
                total,
                done: 0,
                started: now,
                last: now,
            }
        }
    }

    /// One more item done.
    pub fn inc(&mut self) {
        match self {
            Progress::Bar(bar) => bar.inc(1),
            Progress::Plain {
                what,
                total,
                done,
                started,
                last,
            } => {
                *done += 1;
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    let rate = *done as f64 / started.elapsed().as_secs_f64().max(0.001);
                    eprintln!("{what}: {done}/{total} ({rate:.0}/s)");
                }
            }
        }
    }

    /// A line of output above the bar (or just the line).
    pub fn line(&self, text: &str) {
        match self {
            Progress::Bar(bar) => bar.println(text),
            Progress::Plain { .. } => println!("{text}"),
        }
    }

    pub fn finish(self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
