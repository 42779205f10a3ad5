//! Step 05 honours the step contract.

testkit::contract_suite!(env!("CARGO_BIN_EXE_step05-epoll-kqueue"));
