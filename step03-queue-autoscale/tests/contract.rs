//! Step 03 honours the step contract.

testkit::contract_suite!(env!("CARGO_BIN_EXE_step03-queue-autoscale"));
