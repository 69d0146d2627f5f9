//! deadpeer
