//! Real dead TCP peers on demand.
#![forbid(unsafe_code)]
