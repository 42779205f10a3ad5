//! Step 03 honours the step contract.
//!
//! With a fast shrink: after a connection storm the scaler has grown to its 100 workers and,
//! by design, lets one go per `--shrink-after-ms` of calm (half a second by default: 50 s to
//! get back to one). The storm check asks whether anything *leaked*, not how patient the
//! scaler is, so here workers leave every 20 ms.

testkit::contract_suite!(
    env!("CARGO_BIN_EXE_step03-queue-autoscale"),
    "--shrink-after-ms",
    "20"
);
