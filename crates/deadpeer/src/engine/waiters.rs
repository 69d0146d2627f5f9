//! The wakers of a connection's pending `Dead` futures.

use std::task::Waker;

/// The wakers of pending `Dead` futures, by slot. Most connections have one watcher, kept
/// without an allocation.
#[derive(Default)]
pub(crate) enum Waiters {
    #[default]
    None,
    /// Slot 0 only.
    One(Slot),
    /// Any number of slots.
    Many(Vec<Slot>),
}

/// One `Dead` future's place among the waiters.
#[derive(Default)]
pub(crate) enum Slot {
    /// Nobody's: free to take.
    #[default]
    Free,
    /// Taken by a future waiting with this waker.
    Waiting(Waker),
    /// Taken by a future that was woken (and has not polled again).
    Woken,
}

impl Slot {
    fn take_waker(&mut self) -> Option<Waker> {
        match std::mem::replace(self, Slot::Woken) {
            Slot::Waiting(w) => Some(w),
            Slot::Woken => None,
            Slot::Free => {
                *self = Slot::Free;
                None
            }
        }
    }
}

impl Waiters {
    /// Takes a free slot for `waker` and returns it.
    pub(crate) fn join(&mut self, waker: &Waker) -> usize {
        match self {
            Waiters::None => {
                *self = Waiters::One(Slot::Waiting(waker.clone()));
                0
            }
            Waiters::One(first) => {
                let first = std::mem::take(first);
                *self = Waiters::Many(vec![first, Slot::Waiting(waker.clone())]);
                1
            }
            Waiters::Many(slots) => {
                let i = slots
                    .iter()
                    .position(|s| matches!(s, Slot::Free))
                    .unwrap_or_else(|| {
                        slots.push(Slot::Free);
                        slots.len() - 1
                    });
                slots[i] = Slot::Waiting(waker.clone());
                i
            }
        }
    }

    /// Refreshes the waker of slot `i`.
    pub(crate) fn update(&mut self, i: usize, waker: &Waker) {
        let slot = match self {
            Waiters::One(slot) if i == 0 => slot,
            Waiters::Many(slots) => match slots.get_mut(i) {
                Some(slot) if !matches!(slot, Slot::Free) => slot,
                _ => return,
            },
            _ => return,
        };
        if !matches!(slot, Slot::Waiting(w) if w.will_wake(waker)) {
            *slot = Slot::Waiting(waker.clone());
        }
    }

    /// Frees slot `i`.
    pub(crate) fn leave(&mut self, i: usize) {
        match self {
            Waiters::One(_) if i == 0 => *self = Waiters::None,
            Waiters::Many(slots) => {
                if let Some(slot) = slots.get_mut(i) {
                    *slot = Slot::Free;
                }
            }
            _ => {}
        }
    }

    /// Wakes every waiter: run with the connection's lock released (taken out with
    /// `mem::take`), each waker isolated, so that a panicking waker stops no other.
    pub(crate) fn wake_all(self) {
        let wake = |w: Waker| {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
        };
        match self {
            Waiters::None => {}
            Waiters::One(mut slot) => slot.take_waker().into_iter().for_each(wake),
            Waiters::Many(slots) => slots
                .into_iter()
                .filter_map(|mut s| s.take_waker())
                .for_each(wake),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Slots are reused once freed, a refreshed waker replaces the old one, a freed slot is
    /// never woken, and a panicking waker stops no other.
    #[test]
    fn slots_are_reused_and_each_waiter_is_woken_once() {
        let (a, b, c) = (
            Arc::new(Count::default()),
            Arc::new(Count::default()),
            Arc::new(Count::default()),
        );
        let (wa, wb, wc) = (
            Waker::from(a.clone()),
            Waker::from(b.clone()),
            Waker::from(c.clone()),
        );
        let mut w = Waiters::default();
        assert_eq!(w.join(&wa), 0);
        assert!(matches!(w, Waiters::One(Slot::Waiting(_))));
        assert_eq!(w.join(&wb), 1);
        assert_eq!(w.join(&wb), 2);
        w.leave(1);
        assert_eq!(w.join(&wc), 1, "the freed slot is taken again");
        w.leave(2);
        w.update(0, &wc);
        w.update(7, &wa); // no such slot: nothing happens
        w.wake_all();
        assert_eq!(a.0.load(Ordering::SeqCst), 0, "replaced by update");
        assert_eq!(b.0.load(Ordering::SeqCst), 0, "its slot was freed");
        assert_eq!(c.0.load(Ordering::SeqCst), 2, "slots 0 and 1");

        struct Panics;
        impl Wake for Panics {
            fn wake(self: Arc<Self>) {
                panic!("a waker that panics");
            }
        }
        let mut w = Waiters::default();
        w.join(&Waker::from(Arc::new(Panics)));
        w.join(&wa);
        w.wake_all();
        assert_eq!(
            a.0.load(Ordering::SeqCst),
            1,
            "woken despite the panic before it"
        );
    }

    #[test]
    fn leaving_the_only_slot_empties_the_waiters() {
        let waker = Waker::from(Arc::new(Count::default()));
        let mut w = Waiters::default();
        w.join(&waker);
        w.leave(0);
        assert!(matches!(w, Waiters::None));
        w.leave(0);
        assert!(matches!(w, Waiters::None));
    }
}
