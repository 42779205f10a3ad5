//! The site every step serves, and its router.
//!
//! [`Site::reply`] turns a request head into a [`Reply`]: the response and how long to wait
//! before sending it. It never sleeps itself. The blocking steps (01–04) sleep for
//! `reply.delay` on their own thread or process; the event loop of step05 sets a timer instead
//! and serves everyone else meanwhile. That difference is the whole point of step05, so the
//! router must not decide it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::parse::{ParseError, RequestHead};
use crate::response::Response;

/// The longest `/sleep?ms=N` we accept: one minute.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// What the methods of every route allow.
const ALLOW: &str = "GET, HEAD";

/// A page of the site, embedded in the binary, with its strong validator.
struct Page {
    body: &'static [u8],
    content_type: &'static str,
    etag: String,
}

impl Page {
    fn new(body: &'static [u8], content_type: &'static str) -> Page {
        // Strong ETag from the content: FNV-1a over the bytes. Any change to the file changes
        // it, so a browser's cached copy is reused exactly as long as it is still right.
        let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Page {
            body,
            content_type,
            etag: format!("\"{hash:016x}\""),
        }
    }

    fn response(&'static self, status: u16) -> Response {
        Response {
            etag: Some(&self.etag),
            ..Response::new(status, self.content_type, self.body)
        }
    }
}

static HELLO: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_bytes!("../site/hello.html"),
        "text/html; charset=utf-8",
    )
});
static SCRIPT: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_bytes!("../site/script.js"),
        "application/javascript",
    )
});
static LIVE: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_bytes!("../site/live.html"),
        "text/html; charset=utf-8",
    )
});
static NOT_FOUND: LazyLock<Page> = LazyLock::new(|| {
    Page::new(
        include_bytes!("../site/404.html"),
        "text/html; charset=utf-8",
    )
});

/// The answer to one request: send `response` once `delay` has passed.
#[derive(Debug, Clone)]
pub struct Reply {
    pub response: Response,
    /// `--delay-ms` plus any `/sleep?ms=N`: the simulated slow work behind this request.
    pub delay: Duration,
}

/// The site as one step serves it: the routes, the step's name and its live figures.
pub struct Site {
    step: &'static str,
    delay: Duration,
    extra_header: Option<(&'static str, String)>,
    /// Adds the step's own figures to `/stats`. Called on the thread that answers `/stats`.
    stats: Box<dyn Fn(&mut StatsJson) + Send + Sync>,
    /// Responses rendered by this process: `/stats` reports it as `served`.
    served: AtomicU64,
    /// Where `served` is counted instead, when it must be visible to other processes (step06's
    /// scoreboard, in shared memory).
    shared_served: Option<&'static AtomicU64>,
}

impl Site {
    /// The site for step `step` (the crate name, sent as `Server:`), where every request waits
    /// `delay` before it is answered.
    pub fn new(step: &'static str, delay: Duration) -> Site {
        Site {
            step,
            delay,
            extra_header: None,
            stats: Box::new(|_| {}),
            served: AtomicU64::new(0),
            shared_served: None,
        }
    }

    /// Adds the step's own figures to `/stats`, after `step`, `pid` and `served` (the responses
    /// this process wrote before this one).
    pub fn with_stats(mut self, stats: impl Fn(&mut StatsJson) + Send + Sync + 'static) -> Site {
        self.stats = Box::new(stats);
        self
    }

    /// Adds one header to every response (step06's `X-Worker`).
    pub fn with_header(mut self, name: &'static str, value: String) -> Site {
        self.extra_header = Some((name, value));
        self
    }

    /// Counts the responses in `counter` instead of a counter of its own: a word of memory that
    /// other processes can read (step06's scoreboard). It starts from the counter's value.
    pub fn with_served_counter(mut self, counter: &'static AtomicU64) -> Site {
        self.shared_served = Some(counter);
        self
    }

    fn served_counter(&self) -> &AtomicU64 {
        self.shared_served.unwrap_or(&self.served)
    }

    pub fn step(&self) -> &'static str {
        self.step
    }

    /// How many responses this process has rendered.
    pub fn served(&self) -> u64 {
        self.served_counter().load(Ordering::Relaxed)
    }

    /// Routes one request. Cheap and non-blocking: the wait is in `reply.delay`.
    pub fn reply(&self, head: &RequestHead<'_>) -> Reply {
        let path = head.path();
        let (get, head_method) = (head.method == "GET", head.method == "HEAD");
        let mut delay = self.delay;
        let mut response = match path {
            "/" | "/hello.html" | "/script.js" | "/live" => {
                let page: &'static Page = match path {
                    "/script.js" => &SCRIPT,
                    "/live" => &LIVE,
                    _ => &HELLO,
                };
                if !(get || head_method) {
                    method_not_allowed()
                } else if head
                    .if_none_match
                    .is_some_and(|tags| etag_matches(tags, &page.etag))
                {
                    // The client's copy is current: the head only, no body (RFC 9110 §15.4.5).
                    Response {
                        head_only: true,
                        ..page.response(304)
                    }
                } else {
                    page.response(200)
                }
            }
            "/sleep" if get || head_method => match sleep_ms(head.query()) {
                Some(ms) => {
                    delay += Duration::from_millis(ms);
                    Response::text(200, format!("slept {ms} ms\n").into_bytes())
                }
                None => Response::text(
                    400,
                    format!("/sleep needs ?ms=N with N from 0 to {MAX_SLEEP_MS}\n").into_bytes(),
                ),
            },
            "/stats" if get || head_method => {
                let mut json = StatsJson::new();
                json.text("step", self.step);
                json.number("pid", u64::from(std::process::id()));
                json.number("served", self.served());
                (self.stats)(&mut json);
                Response {
                    // The live page polls `/stats?close`: a kept-alive connection would hold a
                    // process, a thread or a worker of steps 01-03 for the page alone, and a
                    // script in a browser may not send `Connection: close` itself.
                    close: head
                        .query()
                        .is_some_and(|query| query.split('&').any(|p| p == "close")),
                    ..Response::new(200, "application/json", json.finish().into_bytes())
                }
            }
            "/sleep" | "/stats" => method_not_allowed(),
            _ => NOT_FOUND.response(404),
        };
        response.head_only |= head_method;
        Reply { response, delay }
    }

    /// The response to a request that could not be parsed. The connection closes after it.
    pub fn parse_error(&self, error: ParseError) -> Response {
        Response::error(error.status())
    }

    /// Renders `response` with this step's `Server` and extra header, counting it as served.
    pub fn render(&self, response: &Response, keep_alive: bool, out: &mut Vec<u8>) {
        self.served_counter().fetch_add(1, Ordering::Relaxed);
        let extra = self
            .extra_header
            .as_ref()
            .map(|(name, value)| (*name, value.as_str()));
        response.render(self.step, keep_alive && !response.close, extra, out);
    }
}

fn method_not_allowed() -> Response {
    Response {
        allow: Some(ALLOW),
        ..Response::text(405, &b"405 Method Not Allowed\n"[..])
    }
}

/// The `ms` of `/sleep?ms=N`, if present and in range.
fn sleep_ms(query: Option<&str>) -> Option<u64> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))?;
    // `u64::from_str` accepts a leading '+'; the contract's N is plain digits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|ms| *ms <= MAX_SLEEP_MS)
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`.
fn etag_matches(header: &[u8], etag: &str) -> bool {
    header
        .split(|&b| b == b',')
        .map(|tag| tag.trim_ascii())
        .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == etag.as_bytes())
}

/// A flat JSON object built field by field: what `/stats` needs, without a JSON library.
pub struct StatsJson {
    out: String,
}

impl Default for StatsJson {
    fn default() -> StatsJson {
        StatsJson::new()
    }
}

impl StatsJson {
    /// An empty object: the top of `/stats`, or one item of a [`StatsJson::list`].
    pub fn new() -> StatsJson {
        StatsJson {
            out: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_json_string(&mut self.out, key);
        self.out.push(':');
    }

    pub fn number(&mut self, key: &str, value: impl Into<u64>) -> &mut Self {
        self.key(key);
        self.out.push_str(&value.into().to_string());
        self
    }

    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        push_json_string(&mut self.out, value);
        self
    }

    pub fn boolean(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// A list of objects under `key`, such as step06's lanes (one object per worker).
    pub fn list(&mut self, key: &str, items: impl IntoIterator<Item = StatsJson>) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (n, item) in items.into_iter().enumerate() {
            if n > 0 {
                self.out.push(',');
            }
            self.out.push_str(&item.out);
            self.out.push('}');
        }
        self.out.push(']');
        self
    }

    /// The object's text, closed, with a final newline.
    pub fn finish(mut self) -> String {
        self.out.push_str("}\n");
        self.out
    }
}

fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_head;

    fn reply(site: &Site, raw: &str) -> Reply {
        let head = parse_head(raw.as_bytes()).unwrap().unwrap();
        site.reply(&head)
    }

    fn get(site: &Site, target: &str) -> Reply {
        reply(site, &format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"))
    }

    #[test]
    fn serves_the_pages() {
        let site = Site::new("step-test", Duration::ZERO);
        let hello = get(&site, "/").response;
        assert_eq!(
            (hello.status, hello.content_type),
            (200, "text/html; charset=utf-8")
        );
        assert!(String::from_utf8_lossy(&hello.body).contains("/script.js"));
        assert_eq!(get(&site, "/hello.html").response.body, hello.body);
        assert_eq!(
            get(&site, "/script.js").response.content_type,
            "application/javascript"
        );
        let missing = get(&site, "/nope").response;
        assert_eq!(
            (missing.status, missing.content_type),
            (404, "text/html; charset=utf-8")
        );
    }

    #[test]
    fn a_matching_etag_is_304_without_body() {
        let site = Site::new("step-test", Duration::ZERO);
        let etag = get(&site, "/").response.etag.unwrap();
        for header in [
            etag.to_string(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: {header}\r\n\r\n");
            let response = reply(&site, &raw).response;
            assert_eq!(response.status, 304, "{header}");
            assert!(response.head_only);
        }
        let raw = "GET / HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"other\"\r\n\r\n";
        assert_eq!(reply(&site, raw).response.status, 200);
    }

    #[test]
    fn sleep_is_a_delay_not_a_sleep() {
        let site = Site::new("step-test", Duration::from_millis(5));
        let slept = get(&site, "/sleep?ms=250");
        assert_eq!(slept.delay, Duration::from_millis(255));
        assert_eq!(&*slept.response.body, b"slept 250 ms\n");
        assert_eq!(get(&site, "/").delay, Duration::from_millis(5));
        for bad in [
            "/sleep",
            "/sleep?ms=",
            "/sleep?ms=60001",
            "/sleep?ms=-1",
            "/sleep?ms=+5",
            "/sleep?ms=x",
        ] {
            assert_eq!(get(&site, bad).response.status, 400, "{bad}");
        }
    }

    #[test]
    fn other_methods_on_known_routes_are_405() {
        let site = Site::new("step-test", Duration::ZERO);
        for target in ["/", "/script.js", "/sleep?ms=1", "/stats"] {
            let raw = format!("DELETE {target} HTTP/1.1\r\nHost: t\r\n\r\n");
            let response = reply(&site, &raw).response;
            assert_eq!((response.status, response.allow), (405, Some("GET, HEAD")));
        }
        assert_eq!(
            reply(&site, "POST /nope HTTP/1.1\r\nHost: t\r\n\r\n")
                .response
                .status,
            404
        );
    }

    #[test]
    fn stats_is_json_with_the_steps_figures() {
        let site = Site::new("step-test", Duration::ZERO).with_stats(|json| {
            json.number("workers", 3u64)
                .text("mode", "a \"quoted\" word");
        });
        let body = String::from_utf8(get(&site, "/stats").response.body.into_owned()).unwrap();
        let pid = std::process::id();
        assert_eq!(
            body,
            format!(
                "{{\"step\":\"step-test\",\"pid\":{pid},\"served\":0,\"workers\":3,\"mode\":\"a \\\"quoted\\\" word\"}}\n"
            )
        );
    }

    #[test]
    fn the_live_page_polls_stats_and_asks_to_close() {
        let site = Site::new("step-test", Duration::ZERO);
        let live = get(&site, "/live").response;
        assert_eq!(
            (live.status, live.content_type),
            (200, "text/html; charset=utf-8")
        );
        let page = String::from_utf8_lossy(&live.body);
        assert!(page.contains("fetch(\"/stats?close\""));
        // Self-contained: no script, style or image from anywhere else.
        assert!(!page.contains("src=") && !page.contains("href="));
        assert!(live.etag.is_some());
        assert!(get(&site, "/stats?close").response.close);
        assert!(!get(&site, "/stats").response.close);
        assert!(!get(&site, "/stats?closed=1").response.close);
    }

    #[test]
    fn lists_and_a_shared_served_counter() {
        static SHARED: AtomicU64 = AtomicU64::new(7);
        let site = Site::new("step-test", Duration::ZERO)
            .with_served_counter(&SHARED)
            .with_stats(|json| {
                let mut lane = StatsJson::new();
                lane.number("pid", 1u64);
                json.list("lanes", [lane, StatsJson::new()])
                    .list("none", []);
            });
        let mut out = Vec::new();
        site.render(&get(&site, "/").response, true, &mut out);
        assert_eq!((site.served(), SHARED.load(Ordering::Relaxed)), (8, 8));
        let body = String::from_utf8(get(&site, "/stats").response.body.into_owned()).unwrap();
        assert!(
            body.ends_with(",\"served\":8,\"lanes\":[{\"pid\":1},{}],\"none\":[]}\n"),
            "{body}"
        );
    }
}
