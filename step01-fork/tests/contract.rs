//! Step 01 honours the step contract, forking and iterative alike.

mod forking {
    testkit::contract_suite!(env!("CARGO_BIN_EXE_step01-fork"));
}

mod iterative {
    testkit::contract_suite!(env!("CARGO_BIN_EXE_step01-fork"), "--iterative");
}
