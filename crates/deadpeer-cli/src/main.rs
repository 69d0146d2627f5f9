//! The `deadpeer` command.
#![forbid(unsafe_code)]
fn main() {}
