//! The contract, end to end through the proxy.
//!
//! Most of the contract is about the site (its pages, ETags, 405s, `/sleep`), which a proxy
//! does not serve: it forwards. So the suite runs against the built-in demo (no `--config`),
//! where the proxy stands in front of upstreams serving the course's site, and every check
//! must pass *through* it: the site's answers come from an upstream, carried unchanged except
//! for the fields a proxy owns (`Server`, `Date`, `Connection`, `Via`); the HTTP behaviour
//! (keep-alive, pipelining, timeouts, bad heads, framing conflicts, bodies, `Expect`, signals,
//! descriptors) is the proxy's own; and `/stats` is answered by the proxy itself, with its
//! figures.

mod contract {
    testkit::contract_suite!(env!("CARGO_BIN_EXE_step07-reverse-proxy"));
}
