//! The proxy's configuration: a TOML file (`--config proxy.toml`), read at start and again on
//! every `SIGHUP`, or the built-in demo's when there is no file.
//!
//! Reading is all or nothing. [`Config::parse`] checks everything a worker will rely on (every
//! route names a group, every upstream is an `IP:port` or a `name:port` that resolves, every
//! timeout is positive, every header value we will send is clean) and refuses the file with
//! one line saying what is wrong. The master reads the file on `SIGHUP` *before* it forks the
//! next generation, so a broken file costs one log line and the workers in service go on with
//! the configuration they have: the rollback is simply never having rolled forward.
//!
//! ```toml
//! [proxy]
//! read_timeout_ms = 30000
//!
//! [[route]]
//! prefix = "/api/"
//! group = "api"
//!
//! [group.api]
//! strategy = "least_conn"
//! upstreams = ["127.0.0.1:9001", "127.0.0.1:9002"]
//! ```
//!
//! `examples/proxy.toml` shows every setting with its default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::Deserialize;

/// The most upstreams one configuration may name, over all its groups: the shared-memory
/// counters ([`crate::operations::zone`]) are sized for them.
pub const MAX_UPSTREAMS: usize = 64;

/// The file as written. Unknown keys are errors: a misspelt `read_timout_ms` must not be
/// silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    proxy: ProxySettings,
    #[serde(default, rename = "route")]
    routes: Vec<RouteFile>,
    #[serde(default, rename = "group")]
    groups: BTreeMap<String, GroupFile>,
}

/// `[proxy]`: settings for every upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// How long connecting to an upstream may take (nginx's `proxy_connect_timeout`).
    pub connect_timeout_ms: u64,
    /// The longest wait for the next bytes of an upstream's answer, head or body (nginx's
    /// `proxy_read_timeout`): a limit on silence, not on the whole response, so that a long
    /// download that keeps flowing is never cut.
    pub read_timeout_ms: u64,
    /// An idle kept-alive connection to an upstream is closed after this long (nginx's
    /// `keepalive_timeout` in an `upstream` block).
    pub keepalive_timeout_ms: u64,
    /// Idle connections kept open per upstream, per worker (nginx's `keepalive`). Once as
    /// many are idle, the oldest is closed to make room for the one just freed.
    /// (`keepalive_connections`, its first name, is still read.)
    #[serde(alias = "keepalive_connections")]
    pub keepalive: usize,
    /// The proxy answers `GET /stats` itself, with its own figures, instead of forwarding it,
    /// and `GET /live`, the page that draws them.
    pub stats: bool,
    /// Responses carry `X-Upstream: IP:port`, the upstream that answered. Handy to watch the
    /// balancing; off by default because it tells every client the internal addresses.
    pub upstream_header: bool,
}

impl Default for ProxySettings {
    fn default() -> ProxySettings {
        ProxySettings {
            connect_timeout_ms: 3_000,
            read_timeout_ms: 30_000,
            keepalive_timeout_ms: 60_000,
            keepalive: 64,
            stats: true,
            upstream_header: false,
        }
    }
}

impl ProxySettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    #[serde(default = "root_prefix")]
    prefix: String,
    host: Option<String>,
    group: String,
}

fn root_prefix() -> String {
    "/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    upstreams: Vec<String>,
    #[serde(default)]
    strategy: Strategy,
    hash_key: Option<String>,
    #[serde(default)]
    host_header: Option<String>,
    health: Option<HealthCheck>,
    #[serde(default)]
    outlier: Outlier,
}

/// How a group picks the upstream for a request (see [`crate::balance`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each upstream in turn.
    #[default]
    RoundRobin,
    /// The upstream with the fewest requests in flight (from this worker).
    LeastConn,
    /// The same key (client address or a header) always to the same upstream while it is up.
    ConsistentHash,
}

/// What a `consistent_hash` group hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (nginx's `hash $remote_addr consistent`).
    ClientIp,
    /// The value of this request header (lower case), or the client's IP when it is absent.
    Header(String),
}

/// The `Host` header sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's own (the default, what most applications behind a proxy expect).
    Pass,
    /// The upstream as the file names it, `IP:port` or `name:port` (nginx's default,
    /// `$proxy_host`).
    Upstream,
    /// This name.
    Fixed(String),
}

/// `[group.NAME.health]`: active checks, a `GET` of `path` on each upstream every `interval_ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub path: String,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_check_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failed checks that take an upstream out (`down`).
    #[serde(default = "default_fails")]
    pub fails: u32,
    /// Consecutive good checks that bring a down upstream back.
    #[serde(default = "default_passes")]
    pub passes: u32,
}

fn default_interval_ms() -> u64 {
    2_000
}
fn default_check_timeout_ms() -> u64 {
    1_000
}
fn default_fails() -> u32 {
    3
}
fn default_passes() -> u32 {
    2
}

/// `[group.NAME.outlier]`: passive checks, from the answers to real requests (Envoy's outlier
/// detection): after `consecutive_failures` connection errors or 5xx answers in a row, an
/// upstream gets no requests from this worker for `ejection_ms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub ejection_ms: u64,
}

impl Default for Outlier {
    fn default() -> Outlier {
        Outlier {
            consecutive_failures: 5,
            ejection_ms: 10_000,
        }
    }
}

/// One route: requests whose path starts with `prefix` (and whose host is `host`, if given)
/// go to `group`.
#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    /// Lower case, without a port.
    pub host: Option<String>,
    pub group: usize,
}

/// A group of interchangeable upstreams and how to use them.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub strategy: Strategy,
    pub hash_key: HashKey,
    pub host_header: HostHeader,
    pub health: Option<HealthCheck>,
    pub outlier: Outlier,
    /// Indices into [`Config::upstreams`].
    pub members: Vec<usize>,
}

/// One upstream of one group. The same address in two groups is two upstreams: each group
/// has its own health checks and counters for it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub group: usize,
    pub addr: SocketAddr,
    /// `IP:port`, or the `name:port` the file gave: as metrics and logs name it.
    pub name: String,
}

/// A configuration checked and ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: a path, or the built-in demo.
    pub source: String,
    /// The TOML text it was read from, for the admin's `GET /config`.
    pub text: String,
    pub proxy: ProxySettings,
    pub routes: Vec<Route>,
    pub groups: Vec<Group>,
    pub upstreams: Vec<Upstream>,
}

/// Why a configuration cannot be used. Its `Display` is one line, for the log and for the
/// start-up error.
#[derive(Debug)]
pub enum ConfigError {
    /// The file cannot be read.
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not TOML, or not the shape of a configuration: an unknown key, a wrong type.
    Syntax(Box<toml::de::Error>),
    /// Well-formed, but wrong: the text says what.
    Invalid(String),
    /// One of the above, in the file at `path`.
    In {
        path: String,
        source: Box<ConfigError>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => write!(f, "cannot read {path}: {source}"),
            // toml's message spans lines (it quotes the line at fault): one line here.
            ConfigError::Syntax(error) => {
                let text = error.to_string();
                let mut words = text.split_whitespace();
                if let Some(first) = words.next() {
                    f.write_str(first)?;
                }
                words.try_for_each(|word| write!(f, " {word}"))
            }
            ConfigError::Invalid(what) => f.write_str(what),
            ConfigError::In { path, source } => write!(f, "{path}: {source}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Syntax(error) => Some(error),
            ConfigError::Invalid(_) => None,
            ConfigError::In { source, .. } => Some(source),
        }
    }
}

impl From<String> for ConfigError {
    fn from(what: String) -> ConfigError {
        ConfigError::Invalid(what)
    }
}

impl From<&str> for ConfigError {
    fn from(what: &str) -> ConfigError {
        ConfigError::Invalid(what.to_string())
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`]: why the file cannot be read or used.
    pub fn load(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        Config::parse(path, &text).map_err(|error| ConfigError::In {
            path: path.to_string(),
            source: Box::new(error),
        })
    }

    /// Checks the configuration in `text`; `source` names it.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] saying what is wrong.
    pub fn parse(source: &str, text: &str) -> Result<Config, ConfigError> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|error| ConfigError::Syntax(Box::new(error)))?;
        let proxy = file.proxy;
        for (name, value) in [
            ("connect_timeout_ms", proxy.connect_timeout_ms),
            ("read_timeout_ms", proxy.read_timeout_ms),
            ("keepalive_timeout_ms", proxy.keepalive_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("[proxy] {name} must be at least 1").into());
            }
        }
        if file.groups.is_empty() {
            return Err("no [group.NAME] defined".into());
        }
        let mut groups = Vec::new();
        let mut upstreams = Vec::new();
        for (name, group) in &file.groups {
            groups.push(check_group(name, group, groups.len(), &mut upstreams)?);
        }
        if upstreams.len() > MAX_UPSTREAMS {
            return Err(format!(
                "{} upstreams in all; at most {MAX_UPSTREAMS}",
                upstreams.len()
            )
            .into());
        }
        if file.routes.is_empty() {
            return Err("no [[route]] defined: nothing would be proxied".into());
        }
        let routes = file
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| check_route(i + 1, route, &groups))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            source: source.to_string(),
            text: text.to_string(),
            proxy,
            routes,
            groups,
            upstreams,
        })
    }

    /// The built-in demo's configuration: one route, one round-robin group of `upstreams`,
    /// health-checked, answering with `X-Upstream` so that the balancing shows.
    ///
    /// # Errors
    ///
    /// Never in practice: the text is ours; but it goes through the same checks as a file.
    pub fn demo(upstreams: &[SocketAddr]) -> Result<Config, ConfigError> {
        let list = upstreams
            .iter()
            .map(|addr| format!("\"{addr}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "# The built-in demo: no --config was given, so the proxy started {count} upstreams\n\
             # itself (step 05's event loop serving the course's site, a process each).\n\
             [proxy]\n\
             upstream_header = true\n\
             \n\
             [[route]]\n\
             prefix = \"/\"\n\
             group = \"demo\"\n\
             \n\
             [group.demo]\n\
             strategy = \"round_robin\"\n\
             upstreams = [{list}]\n\
             \n\
             [group.demo.health]\n\
             path = \"/\"\n\
             interval_ms = 1000\n",
            count = upstreams.len()
        );
        Config::parse("built-in demo", &text)
    }

    /// The group for a request to `host` (without its port, in any case) and `path`: the route with the
    /// longest matching prefix among those for this host, else among those for any host (as
    /// nginx picks a `server` by name, then its longest `location` prefix). `None`: no route,
    /// answered 404 by the proxy; nothing is forwarded anywhere.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let longest = |for_host: &dyn Fn(&Route) -> bool| {
            self.routes
                .iter()
                .filter(|route| for_host(route) && path.starts_with(&route.prefix))
                .max_by_key(|route| route.prefix.len())
                .map(|route| route.group)
        };
        let named = |route: &Route| matches!((&route.host, host), (Some(name), Some(host)) if name.eq_ignore_ascii_case(host));
        longest(&named).or_else(|| longest(&|route: &Route| route.host.is_none()))
    }
}

fn check_group(
    name: &str,
    group: &GroupFile,
    index: usize,
    upstreams: &mut Vec<Upstream>,
) -> Result<Group, String> {
    let context = format!("[group.{name}]");
    if group.upstreams.is_empty() {
        return Err(format!("{context} has no upstreams"));
    }
    let mut members = Vec::new();
    for address in &group.upstreams {
        let addr = resolve(address).map_err(|why| format!("{context}: {why}"))?;
        // A name keeps its name in logs, metrics and X-Upstream (and, with host_header =
        // "upstream", in Host, like nginx's $proxy_host); an address is written the one way.
        let name = match address.parse::<SocketAddr>() {
            Ok(_) => addr.to_string(),
            Err(_) => address.clone(),
        };
        if upstreams
            .iter()
            .any(|u: &Upstream| u.group == index && u.addr == addr)
        {
            let at = if name == addr.to_string() {
                String::new()
            } else {
                format!(" (at {addr})")
            };
            return Err(format!("{context}: upstream {name}{at} is listed twice"));
        }
        members.push(upstreams.len());
        upstreams.push(Upstream {
            group: index,
            addr,
            name,
        });
    }
    let hash_key = match group.hash_key.as_deref() {
        None | Some("client_ip") => HashKey::ClientIp,
        Some(key) => match key.strip_prefix("header:") {
            Some(header) if is_token(header) => HashKey::Header(header.to_ascii_lowercase()),
            _ => {
                return Err(format!(
                    "{context}: hash_key must be \"client_ip\" or \"header:NAME\", not {key:?}"
                ));
            }
        },
    };
    if group.hash_key.is_some() && group.strategy != Strategy::ConsistentHash {
        return Err(format!(
            "{context}: hash_key is for strategy = \"consistent_hash\""
        ));
    }
    let host_header = match group.host_header.as_deref() {
        None | Some("pass") => HostHeader::Pass,
        Some("upstream") => HostHeader::Upstream,
        // Checked here, so that no configured value can smuggle CR/LF (or anything else that is
        // not a host) into the requests we send.
        Some(host) if !host.is_empty() && host.bytes().all(is_host_byte) => {
            HostHeader::Fixed(host.to_string())
        }
        Some(host) => {
            return Err(format!(
                "{context}: host_header must be \"pass\", \"upstream\" or a host name, not {host:?}"
            ));
        }
    };
    if let Some(health) = &group.health {
        if !health.path.starts_with('/') || !health.path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "{context}: health path must start with / and hold no spaces or control bytes"
            ));
        }
        if health.interval_ms == 0
            || health.timeout_ms == 0
            || health.fails == 0
            || health.passes == 0
        {
            return Err(format!(
                "{context}: health interval_ms, timeout_ms, fails and passes must be at least 1"
            ));
        }
    }
    if group.outlier.consecutive_failures == 0 || group.outlier.ejection_ms == 0 {
        return Err(format!(
            "{context}: outlier consecutive_failures and ejection_ms must be at least 1"
        ));
    }
    Ok(Group {
        name: name.to_string(),
        strategy: group.strategy,
        hash_key,
        host_header,
        health: group.health.clone(),
        outlier: group.outlier.clone(),
        members,
    })
}

/// An upstream's address: an `IP:port` as it is, or a `name:port` resolved now. nginx resolves
/// the names in its `upstream` blocks the same way, when it reads its configuration: here at
/// start and at every `SIGHUP`, in the master, which serves no connection, so the blocking
/// `getaddrinfo` stalls no one. A name that moves later (a container restarted with another
/// address) is followed at the next reload; resolving per request would put a resolver in the
/// path of every request. A compose project's service names are such names.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    let well_formed = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            && port.parse::<u16>().is_ok()
    });
    if !well_formed {
        return Err(format!(
            "upstream {address:?} is not an IP:port or name:port address (e.g. 127.0.0.1:9001)"
        ));
    }
    let mut addrs = address
        .to_socket_addrs()
        .map_err(|error| format!("upstream {address:?}: cannot resolve the name: {error}"))?;
    // The first address only: nginx would make an upstream of each, but a name with several
    // addresses is rare behind a proxy that balances on its own.
    addrs
        .next()
        .ok_or_else(|| format!("upstream {address:?}: the name has no address"))
}

fn check_route(number: usize, route: &RouteFile, groups: &[Group]) -> Result<Route, String> {
    let group = groups
        .iter()
        .position(|g| g.name == route.group)
        .ok_or_else(|| format!("route {number}: no [group.{}]", route.group))?;
    if !route.prefix.starts_with('/') {
        return Err(format!(
            "route {number}: prefix {:?} must start with /",
            route.prefix
        ));
    }
    let host = match &route.host {
        Some(host) if !host.is_empty() && host.bytes().all(is_host_byte) => {
            Some(host.to_ascii_lowercase())
        }
        Some(host) => return Err(format!("route {number}: invalid host {host:?}")),
        None => None,
    };
    Ok(Route {
        prefix: route.prefix.clone(),
        host,
        group,
    })
}

/// An HTTP token (RFC 9110 §5.6.2): what a header name is made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The bytes of a host name or address, with its port.
fn is_host_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._:[]".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [[route]]
        prefix = "/api/"
        group = "api"

        [[route]]
        group = "web"

        [[route]]
        host = "Admin.Example"
        prefix = "/"
        group = "api"

        [group.api]
        strategy = "consistent_hash"
        hash_key = "header:X-User"
        upstreams = ["127.0.0.1:9001", "127.0.0.1:9002"]

        [group.web]
        upstreams = ["[::1]:9003"]
        host_header = "upstream"
        health = { path = "/health", fails = 2 }
    "#;

    #[test]
    fn a_good_file_is_read() {
        let config = Config::parse("test", GOOD).unwrap();
        assert_eq!(config.upstreams.len(), 3);
        let api = &config.groups[config.route(None, "/api/users").unwrap()];
        assert_eq!(api.name, "api");
        assert_eq!(api.hash_key, HashKey::Header("x-user".into()));
        let web = &config.groups[config.route(None, "/index.html").unwrap()];
        assert_eq!(web.host_header, HostHeader::Upstream);
        assert_eq!(
            web.health.as_ref().map(|h| (h.fails, h.passes)),
            Some((2, 2))
        );
        assert_eq!(config.proxy.read_timeout_ms, 30_000);
        assert_eq!(config.proxy.keepalive, 64);
    }

    #[test]
    fn keepalive_has_its_old_name_too() {
        let group = "[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"127.0.0.1:1\"]\n";
        for key in ["keepalive", "keepalive_connections"] {
            let text = format!("[proxy]\n{key} = 8\n{group}");
            assert_eq!(Config::parse("test", &text).unwrap().proxy.keepalive, 8);
        }
    }

    #[test]
    fn the_longest_prefix_wins_and_hosts_come_first() {
        let config = Config::parse("test", GOOD).unwrap();
        let group = |host, path| {
            config
                .route(host, path)
                .map(|g| config.groups[g].name.clone())
        };
        assert_eq!(group(None, "/api/x").as_deref(), Some("api"));
        assert_eq!(group(None, "/apix").as_deref(), Some("web"));
        assert_eq!(group(Some("admin.example"), "/x").as_deref(), Some("api"));
        assert_eq!(group(Some("other.example"), "/x").as_deref(), Some("web"));
        // Not a path at all (CONNECT's authority form): no route.
        assert_eq!(group(None, "elsewhere.test:443"), None);
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        let cases = [
            ("[[route]]\ngroup = \"x\"\n", "no [group.NAME]"),
            (
                "[[route]]\ngroup = \"nope\"\n[group.a]\nupstreams = [\"127.0.0.1:1\"]\n",
                "no [group.nope]",
            ),
            (
                "[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"127.0.0.1\"]\n",
                "not an IP:port or name:port",
            ),
            (
                "[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"web/1:80\"]\n",
                "not an IP:port or name:port",
            ),
            (
                "[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
                "upstream 127.0.0.1:1 is listed twice",
            ),
            (
                "[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = []\n",
                "no upstreams",
            ),
            (
                "[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"127.0.0.1:1\"]\nhost_header = \"a\\r\\nX: y\"\n",
                "host_header",
            ),
            (
                "[proxy]\nread_timout_ms = 5\n[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"127.0.0.1:1\"]\n",
                "unknown field",
            ),
            (
                "[proxy]\nread_timeout_ms = 0\n[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"127.0.0.1:1\"]\n",
                "read_timeout_ms",
            ),
            (
                "[[route]]\nprefix = \"api\"\ngroup = \"a\"\n[group.a]\nupstreams = [\"127.0.0.1:1\"]\n",
                "must start with /",
            ),
            (
                "[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"127.0.0.1:1\"]\nhash_key = \"client_ip\"\n",
                "consistent_hash",
            ),
            (
                "[[route]]\ngroup = \"a\"\n[group.a]\nstrategy = \"random\"\nupstreams = [\"127.0.0.1:1\"]\n",
                "unknown variant",
            ),
            ("this is not toml", "expected"),
        ];
        for (text, why) in cases {
            let error = Config::parse("test", text).unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error:?}");
        }
    }

    /// As a compose project names its services: the name is resolved when the file is read
    /// (`localhost`, from /etc/hosts: no DNS query leaves the machine), and kept as written.
    #[test]
    fn a_name_is_resolved_when_the_file_is_read() {
        let text = "[[route]]\ngroup = \"a\"\n[group.a]\nupstreams = [\"localhost:9001\"]\n";
        let config = Config::parse("test", text).unwrap();
        let upstream = &config.upstreams[0];
        assert_eq!(upstream.name, "localhost:9001");
        assert!(upstream.addr.ip().is_loopback(), "{}", upstream.addr);
        assert_eq!(upstream.addr.port(), 9001);
    }

    #[test]
    fn the_example_configurations_are_valid() {
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(examples).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let path = path.to_string_lossy();
                if let Err(error) = Config::load(&path) {
                    panic!("{path}: {error}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 2, "only {checked} examples in {examples}");
    }

    #[test]
    fn the_demo_configuration_is_valid() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let config = Config::demo(&addrs).unwrap();
        assert_eq!(config.upstreams.len(), 2);
        assert!(config.proxy.upstream_header);
        assert_eq!(config.route(Some("x"), "/"), Some(0));
    }
}
