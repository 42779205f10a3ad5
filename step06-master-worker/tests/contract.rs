//! Step 06 honours the step contract, whichever way its workers listen.

mod shared {
    testkit::contract_suite!(env!("CARGO_BIN_EXE_step06-master-worker"));
}

mod reuseport {
    testkit::contract_suite!(
        env!("CARGO_BIN_EXE_step06-master-worker"),
        "--listen",
        "reuseport"
    );
}
