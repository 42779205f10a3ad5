//! The bad-input corpus (`testkit/corpus/bad-input.toml`): what the internet sends, each case
//! with the answer every step must give.

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::Client;
use crate::server::Server;
use crate::target::Target;

const CORPUS: &str = include_str!("../corpus/bad-input.toml");

/// The header timeout the corpus's servers run with, so that slow cases end quickly.
pub const HEADER_TIMEOUT_MS: &str = "1000";

#[derive(Debug, Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

/// One case of the corpus.
#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    send: Option<String>,
    #[serde(default)]
    send_hex: Option<String>,
    expect: Expect,
    #[serde(default)]
    then: Option<Then>,
    #[serde(default)]
    half_close: bool,
}

/// The first thing the client sees.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Expect {
    Status(u16),
    /// `"close"`: the connection is closed without an answer.
    Close(CloseWord),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseWord {
    Close,
}

/// What the connection does after the first answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    Close,
    Open,
}

impl Case {
    /// The bytes to send, with `{TEXT*N}` expanded.
    pub fn bytes(&self) -> Vec<u8> {
        if let Some(hex) = &self.send_hex {
            return (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
        }
        expand(self.send.as_deref().unwrap_or_default()).into_bytes()
    }

    /// Whether the connection must stay usable after the first answer. Error answers close
    /// unless the case says otherwise.
    fn stays_open(&self) -> bool {
        match self.then {
            Some(then) => then == Then::Open,
            None => matches!(self.expect, Expect::Status(status) if status < 400),
        }
    }
}

/// `{TEXT*N}` becomes TEXT repeated N times; everything else is kept.
fn expand(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let inside = &rest[open + 1..];
        let parsed = inside.find('}').and_then(|close| {
            let (text, count) = inside[..close].rsplit_once('*')?;
            Some((text, count.parse::<usize>().ok()?, close))
        });
        match parsed {
            Some((text, count, close)) => {
                out.push_str(&text.repeat(count));
                rest = &inside[close + 1..];
            }
            None => {
                out.push('{');
                rest = inside;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every case of the corpus.
///
/// # Panics
///
/// When the corpus file is not valid (a test-data bug).
pub fn cases() -> Vec<Case> {
    toml::from_str::<Corpus>(CORPUS)
        .unwrap_or_else(|error| panic!("testkit/corpus/bad-input.toml: {error}"))
        .case
}

/// Runs one case against `server`; `Err` says what the server did instead.
///
/// # Errors
///
/// A description of the difference between what was expected and what happened.
pub fn run_case(server: &Server, case: &Case) -> Result<(), String> {
    let mut client = Client::connect(server.addr());
    let bytes = case.bytes();
    // A server may answer and close before it has read everything (an error found early):
    // a failed write is then fine, the answer is what counts.
    let _ = client.stream().write_all(&bytes);
    if case.half_close {
        let _ = client.stream().shutdown(Shutdown::Write);
    }
    let started = Instant::now();
    match (&case.expect, client.try_read_response(false)) {
        (Expect::Close(_), Err(_)) => return Ok(()),
        (Expect::Close(_), Ok(response)) => {
            return Err(format!(
                "expected a close without answer, got {}",
                response.status
            ));
        }
        (Expect::Status(_), Err(error)) => {
            return Err(format!("no answer after {:?}: {error}", started.elapsed()));
        }
        (Expect::Status(expected), Ok(response)) if response.status != *expected => {
            let text = response.text();
            let shown: String = text.chars().take(60).collect();
            let more = if shown.len() < text.len() { "..." } else { "" };
            return Err(format!(
                "expected {expected}, got {}: {shown:?}{more}",
                response.status
            ));
        }
        (Expect::Status(_), Ok(_)) => {}
    }
    if case.stays_open() {
        let _ = client
            .stream()
            .write_all(b"GET /script.js HTTP/1.1\r\nHost: t\r\n\r\n");
        match client.try_read_response(false) {
            Ok(response) if response.status == 200 => {}
            Ok(response) => {
                return Err(format!(
                    "next request on the connection: {}",
                    response.status
                ));
            }
            Err(error) => return Err(format!("the connection did not stay usable: {error}")),
        }
    } else if !client.closes_within(Duration::from_secs(5)) {
        return Err("the server did not close the connection after its answer".into());
    }
    Ok(())
}

/// Runs the whole corpus against one server of `target`, checking after each case that the
/// server still serves a normal request; panics listing every case that failed.
pub fn run_all(target: &Target) {
    let server = target.start(&["--quiet", "--header-timeout-ms", HEADER_TIMEOUT_MS]);
    let mut failures = Vec::new();
    for case in cases() {
        if let Err(what) = run_case(&server, &case) {
            failures.push(format!("{}: {what}", case.name));
        }
        match crate::client::try_get(server.addr(), "/") {
            Ok(after) if after.status == 200 => {}
            Ok(after) => failures.push(format!(
                "{}: a normal request afterwards got {}",
                case.name, after.status
            )),
            Err(error) => {
                failures.push(format!(
                    "{}: the server stopped answering ({error}); the cases after it were not run",
                    case.name
                ));
                break;
            }
        }
    }
    server.assert_no_panic();
    let total = cases().len();
    assert!(
        failures.is_empty(),
        "{} of {total} corpus cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_parses_and_has_at_least_60_cases() {
        let cases = cases();
        assert!(cases.len() >= 60, "{} cases", cases.len());
        for case in &cases {
            assert!(
                case.send.is_some() != case.send_hex.is_some(),
                "{}: send or send_hex",
                case.name
            );
        }
    }

    #[test]
    fn repetition_expands() {
        assert_eq!(expand("a{xy*3}b"), "axyxyxyb");
        assert_eq!(expand("{H: v\r\n*2}"), "H: v\r\nH: v\r\n");
        assert_eq!(expand("no {braces here"), "no {braces here");
    }
}
