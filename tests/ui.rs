//! Compile-fail tests: each file under `tests/ui/` breaks one rule of
//! `#[farcall::remote]`, and its `.stderr` shows the error the user sees.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
