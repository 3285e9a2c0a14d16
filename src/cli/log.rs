//! Where the binary's log lines go and how they look: standard error, filtered by the
//! configuration's `log_level`, else `RUST_LOG` (default: warnings and errors), as text or as
//! JSON. A reload changes the filter ([`set_level`]).
//!
//! Text is coloured only when standard error is a terminal and `NO_COLOR` is unset or empty, so
//! a log redirected to a file or a pipe holds no escape codes. JSON is one object per line
//! (tracing-subscriber's formatter, the event's fields at the top level beside `timestamp`,
//! `level` and `target`). In JSON the binary's own lines, the node's start-up line and the error
//! it exits with, are JSON objects too, whatever `RUST_LOG` says, so that every line a log
//! collector reads parses.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use ringspan::daemon::config::LogFormat;
use tracing::Dispatch;
use tracing_subscriber::EnvFilter;

/// The format chosen by [`init`].
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The target of the binary's own lines, which no event of the library has.
const OWN: &str = "ringspan::cli";

/// A JSON subscriber for the binary's own lines in JSON, whatever `RUST_LOG` says.
static UNFILTERED: OnceLock<Dispatch> = OnceLock::new();

/// Replaces the installed subscriber's filter.
type Refilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// How [`set_level`] reaches the subscriber [`init`] installed.
static REFILTER: OnceLock<Refilter> = OnceLock::new();

/// The filter for `level` (a configuration's `log_level`), else `RUST_LOG`'s, else warnings
/// and errors.
fn filter(level: Option<&str>) -> EnvFilter {
    match level {
        // The configuration checked it; a filter it could not take would only drop directives.
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    }
}

/// Installs the process's log subscriber, writing `format` to standard error. The first call
/// decides; later ones do nothing.
pub fn init(format: LogFormat) {
    init_with(format, None);
}

/// [`init`], the lines written as `level` says (a configuration's `log_level`; `None`: as
/// `RUST_LOG` says).
pub fn init_with(format: LogFormat, level: Option<&str>) {
    if FORMAT.set(format).is_err() {
        return;
    }
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter(level)).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => {
            let builder = builder.with_ansi(colour()).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = REFILTER.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
            builder.try_init()
        }
        LogFormat::Json => {
            let builder =
                builder.json().flatten_event(true).with_ansi(false).with_filter_reloading();
            let handle = builder.reload_handle();
            let _ = REFILTER.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
            builder.try_init()
        }
    };
    if let Err(error) = installed {
        eprintln!("ringspan: logs: {error}");
    }
}

/// Writes the lines `level` says from now on (a reloaded `log_level`; `None`: as `RUST_LOG`
/// says). Nothing happens before [`init`].
pub fn set_level(level: Option<&str>) -> Result<(), String> {
    match REFILTER.get() {
        Some(refilter) => refilter(filter(level)),
        None => Ok(()),
    }
}

/// Whether text lines are coloured: on a terminal, unless `NO_COLOR` says otherwise
/// (<https://no-color.org>).
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The format in use: [`init`]'s, or `fallback` before it.
fn format(fallback: LogFormat) -> LogFormat {
    FORMAT.get().copied().unwrap_or(fallback)
}

/// Prints a line of the binary's own to standard error (`ringspan: message` in text, an INFO
/// event in JSON), whatever the filter.
pub fn notice(message: &str) {
    match format(LogFormat::Text) {
        LogFormat::Text => eprintln!("ringspan: {message}"),
        LogFormat::Json => unfiltered(|| tracing::info!(target: OWN, "{message}")),
    }
}

/// Prints the error the binary exits with (`ringspan: message` in text, an ERROR event in
/// JSON), whatever the filter. `fallback` is the format when [`init`] was not called yet (the
/// command line's choice).
pub fn fatal(message: &str, fallback: LogFormat) {
    match format(fallback) {
        LogFormat::Text => eprintln!("ringspan: {message}"),
        LogFormat::Json => unfiltered(|| tracing::error!(target: OWN, "{message}")),
    }
}

/// Runs `emit` with the JSON subscriber of the binary's own lines as the thread's default. It
/// takes only their target, so the library's events keep the interest the process's filter
/// gives them (a `debug!` stays a no-op when `RUST_LOG` does not ask for it).
fn unfiltered(emit: impl FnOnce()) {
    let dispatch = UNFILTERED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(EnvFilter::new(format!("{OWN}=info")))
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .finish();
        Dispatch::new(subscriber)
    });
    tracing::dispatcher::with_default(dispatch, emit);
}
