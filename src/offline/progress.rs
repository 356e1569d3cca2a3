//! Progress reporting for the offline commands: a progress bar when stderr is a terminal,
//! one summary line per step when it is not (logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// One step of a command, shown as a bar on a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    step: String,
    started: Instant,
    quiet: bool,
}

impl Progress {
    /// Starts a step called `step`, with `total` units when known (a spinner otherwise).
    pub fn start(step: &str, total: Option<u64>, unit: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(&format!(
                        "{{prefix:>10}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{eta}}) {{msg}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template(&format!(
                        "{{prefix:>10}} {{spinner}} {{human_pos}} {unit} {{elapsed}} {{msg}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            bar.set_prefix(step.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            step: step.to_string(),
            started: Instant::now(),
            quiet: false,
        }
    }

    /// A step that shows nothing (tests, library use).
    pub fn hidden() -> Self {
        Self {
            bar: None,
            step: String::new(),
            started: Instant::now(),
            quiet: true,
        }
    }

    /// Sets the units done.
    pub fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// Adds units done.
    pub fn inc(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(done);
        }
    }

    /// Sets the message shown after the bar.
    pub fn message(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
        }
    }

    /// Ends the step and prints `summary` with the elapsed time on one line.
    pub fn finish(self, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if !self.quiet {
            eprintln!(
                "{}: {summary} ({:.1} s)",
                self.step,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
