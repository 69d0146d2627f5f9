//! The last deaths this process latched, by their text, for
//! [`DeadPeer::recover`](crate::DeadPeer::recover).

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::error::DeadPeer;

const KEPT: usize = 256;

static RECENT: Mutex<VecDeque<DeadPeer>> = Mutex::new(VecDeque::new());

/// Remembers a death whose two ends are known (only those can be told apart).
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) fn remember(dead: &DeadPeer) {
    if dead.peer_addr().is_none() || dead.local_addr().is_none() {
        return;
    }
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() == KEPT {
        recent.pop_front();
    }
    recent.push_back(dead.clone());
}

/// The remembered death whose text is `text`, if any.
pub(crate) fn lookup(text: &str) -> Option<DeadPeer> {
    if !text.starts_with("dead peer ") {
        return None;
    }
    let recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent.iter().rev().find(|d| d.to_string() == text).cloned()
}
