//! Cross-crate integration tests for deadpeer on real network namespaces; see `tests/`.
