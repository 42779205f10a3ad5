//! What step 07's feature tests share: a configuration file in the temporary directory, the
//! proxy started on it, and raw requests through it.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use testkit::wait_for;
use testkit::{Client, Response, Server};

pub const BIN: &str = env!("CARGO_BIN_EXE_step07-reverse-proxy");

/// A configuration file, removed when dropped.
pub struct ConfigFile {
    pub path: PathBuf,
}

impl ConfigFile {
    /// Writes `text` to a fresh file in the temporary directory.
    pub fn new(text: &str) -> ConfigFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "step07-test-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let file = ConfigFile { path };
        file.write(text);
        file
    }

    /// Replaces the file's text (for a reload). Written beside it and renamed over it, so
    /// that the proxy never reads half a file.
    pub fn write(&self, text: &str) {
        let partial = self.path.with_extension("partial");
        std::fs::write(&partial, text).unwrap();
        std::fs::rename(&partial, &self.path).unwrap();
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A proxy and the file it was started with.
pub struct Proxy {
    pub server: Server,
    pub config: ConfigFile,
}

impl Proxy {
    /// Starts the proxy on `config` with `workers` workers and `args`.
    pub fn start(config: &str, workers: usize, args: &[&str]) -> Proxy {
        Proxy::start_with_env(config, workers, args, &[])
    }

    pub fn start_with_env(
        config: &str,
        workers: usize,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        let config = ConfigFile::new(config);
        let workers = workers.to_string();
        let mut all = vec!["--config", config.path(), "--workers", &workers];
        all.extend_from_slice(args);
        let server = Server::start_with_env(BIN, &all, env);
        Proxy { server, config }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// One `GET path` on a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.server.get(path)
    }

    /// Sends `raw` on a fresh connection and reads one response.
    pub fn send(&self, raw: &str) -> Response {
        send(self.addr(), raw)
    }

    /// The admin address, from the proxy's `admin: listening on` line (for `--admin
    /// 127.0.0.1:0`).
    pub fn admin_addr(&self) -> SocketAddr {
        let line = wait_for(Duration::from_secs(10), || {
            self.server
                .stdout_lines()
                .into_iter()
                .find(|line| line.starts_with("admin: listening on http://"))
        })
        .unwrap_or_else(|| panic!("no admin line: {:?}", self.server.stdout_lines()));
        line["admin: listening on http://".len()..]
            .split(' ')
            .next()
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("bad admin line {line:?}"))
    }

    /// The pids of the master's `count` workers, once they are all there.
    pub fn wait_for_workers(&self, count: usize) -> Vec<u32> {
        self.server.wait_for_workers(count)
    }
}

/// Sends `raw` on a fresh connection and reads one response.
pub fn send(addr: SocketAddr, raw: &str) -> Response {
    let mut client = Client::connect(addr);
    client.send(raw.as_bytes());
    if raw.starts_with("HEAD ") {
        client.read_head_response()
    } else {
        client.read_response()
    }
}

/// The upstream that answered, as it names itself.
pub fn served_by(response: &Response) -> String {
    response
        .header("x-served-by")
        .unwrap_or_else(|| panic!("no X-Served-By: {response:?}"))
        .to_string()
}

/// A configuration with one route to one group.
pub fn one_group(group: &str, upstreams: &[SocketAddr]) -> String {
    let list = upstreams
        .iter()
        .map(|addr| format!("\"{addr}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[[route]]\ngroup = \"g\"\n\n[group.g]\nupstreams = [{list}]\n{group}\n")
}

/// A TOML list of addresses.
pub fn list(upstreams: &[SocketAddr]) -> String {
    let items = upstreams
        .iter()
        .map(|addr| format!("\"{addr}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[{items}]")
}
