//! Runnable examples for deadpeer; see the `examples/` directory.
