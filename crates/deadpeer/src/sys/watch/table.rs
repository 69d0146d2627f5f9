//! The reaper's table of watchers: an epoll event's key reaches its watcher, never a later
//! occupant of the same slot.

use std::sync::{Arc, Weak};

use super::OnError;

/// Watchers by slot; a key is `generation << 32 | index`, so a freed and reused slot never gets
/// an event meant for its previous occupant.
#[derive(Default)]
pub(super) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

struct Slot {
    generation: u32,
    target: Option<Weak<dyn OnError>>,
}

impl Table {
    pub(super) fn insert(&mut self, target: Weak<dyn OnError>) -> u64 {
        self.live += 1;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    target: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.target = Some(target);
        u64::from(slot.generation) << 32 | u64::from(index)
    }

    pub(super) fn get(&self, key: u64) -> Option<Arc<dyn OnError>> {
        let slot = self.slots.get((key & 0xffff_ffff) as usize)?;
        if u64::from(slot.generation) != key >> 32 {
            return None;
        }
        slot.target.as_ref()?.upgrade()
    }

    pub(super) fn remove(&mut self, key: u64) {
        let index = (key & 0xffff_ffff) as u32;
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        if u64::from(slot.generation) != key >> 32 || slot.target.is_none() {
            return;
        }
        slot.target = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::watch::Report;

    struct Nobody;
    impl OnError for Nobody {
        fn on_error(&self, _peer_closed: bool) -> Option<Report> {
            None
        }
    }

    #[test]
    fn keys_carry_generations() {
        let mut t = Table::default();
        let target: Arc<dyn OnError> = Arc::new(Nobody);
        let a = t.insert(Arc::downgrade(&target));
        t.remove(a);
        let b = t.insert(Arc::downgrade(&target));
        assert_eq!(a & 0xffff_ffff, b & 0xffff_ffff, "slot reused");
        assert!(t.get(a).is_none(), "stale key reached the new occupant");
        assert!(t.get(b).is_some());
        t.remove(a);
        assert!(t.get(b).is_some(), "a stale remove freed the new occupant");
        assert_eq!(t.live, 1);
    }
}
