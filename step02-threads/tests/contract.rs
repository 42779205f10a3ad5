//! Step 02 honours the step contract.

testkit::contract_suite!(env!("CARGO_BIN_EXE_step02-threads"));
