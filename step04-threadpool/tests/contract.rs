//! Step 04 honours the step contract.

testkit::contract_suite!(env!("CARGO_BIN_EXE_step04-threadpool"));
