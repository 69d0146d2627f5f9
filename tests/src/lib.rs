//! Cross-crate integration tests for deadpeer on real network namespaces; see `tests/`.
//!
//! Also the doctests of the repository's markdown, which no published package holds: the
//! README's, the guide's and the recipes' Rust blocks compile (and run, unless marked otherwise) under
//! `cargo test --workspace --all-features`, or `cargo test -p deadpeer-tests --doc`.

/// The README's Rust blocks.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The guide's Rust blocks.
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide.md")]
pub struct GuideDoctests;

/// The recipe for handlers that stop when their client leaves.
#[cfg(doctest)]
#[doc = include_str!("../../docs/recipes/cancel_on_disconnect.md")]
pub struct CancelOnDisconnectDoctests;
