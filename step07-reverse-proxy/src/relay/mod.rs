//! The answer, from the upstream to the client.
//!
//! - [`head`]: the answer's head judged and rewritten: our `Server`, `Date`, `Via` and framing
//!   around the upstream's end-to-end fields, passed as received.
//! - [`body`]: its body, streamed by its framing (a length, chunks with their trailers, or
//!   until the upstream closes), in the client's framing.
//! - [`tunnel`]: after a `101 Switching Protocols`, the two connections joined into one two-way
//!   byte stream (a WebSocket).

pub(crate) mod body;
pub(crate) mod head;
pub(crate) mod tunnel;
