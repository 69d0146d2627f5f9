//! The wakers of a connection's pending `Dead` and `Gone` futures.

use std::task::Waker;

/// The wakers of pending `Dead` and `Gone` futures, by slot. Most connections have one watcher,
/// kept without an allocation.
#[derive(Default)]
pub(crate) enum Waiters {
    #[default]
    None,
    /// Slot 0 only.
    One(Slot),
    /// Any number of slots.
    Many(Vec<Slot>),
}

/// One future's place among the waiters.
#[derive(Default)]
pub(crate) enum Slot {
    /// Nobody's: free to take.
    #[default]
    Free,
    /// Taken by a `Dead` future waiting with this waker: woken by a death or a close.
    Dead(Waker),
    /// Taken by a `Gone` future waiting with this waker: woken by the peer's FIN too.
    Gone(Waker),
    /// Taken by a future that was woken (and has not polled again).
    Woken,
}

/// What a waiting future waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// A death or a close: `Liveness::dead`.
    Dead,
    /// Any ending, a FIN included, or a close: `Liveness::gone`.
    Gone,
}

impl Slot {
    fn waiting(waker: &Waker, until: Until) -> Slot {
        match until {
            Until::Dead => Slot::Dead(waker.clone()),
            Until::Gone => Slot::Gone(waker.clone()),
        }
    }

    fn take_waker(&mut self) -> Option<Waker> {
        match std::mem::replace(self, Slot::Woken) {
            Slot::Dead(w) | Slot::Gone(w) => Some(w),
            Slot::Woken => None,
            Slot::Free => {
                *self = Slot::Free;
                None
            }
        }
    }

    /// The waker of a `Gone` future, leaving the slot taken (woken); `None` for any other.
    fn take_gone(&mut self) -> Option<Waker> {
        match self {
            Slot::Gone(_) => self.take_waker(),
            _ => None,
        }
    }
}

impl Waiters {
    /// Takes a free slot for `waker`, waiting `until`, and returns it.
    pub(crate) fn join(&mut self, waker: &Waker, until: Until) -> usize {
        match self {
            Waiters::None => {
                *self = Waiters::One(Slot::waiting(waker, until));
                0
            }
            Waiters::One(first) => {
                let first = std::mem::take(first);
                *self = Waiters::Many(vec![first, Slot::waiting(waker, until)]);
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
                slots[i] = Slot::waiting(waker, until);
                i
            }
        }
    }

    /// Refreshes the waker of slot `i`, waiting `until`.
    pub(crate) fn update(&mut self, i: usize, waker: &Waker, until: Until) {
        let slot = match self {
            Waiters::One(slot) if i == 0 => slot,
            Waiters::Many(slots) => match slots.get_mut(i) {
                Some(slot) if !matches!(slot, Slot::Free) => slot,
                _ => return,
            },
            _ => return,
        };
        let current = match slot {
            Slot::Dead(w) if until == Until::Dead => Some(w),
            Slot::Gone(w) if until == Until::Gone => Some(w),
            _ => None,
        };
        if !current.is_some_and(|w| w.will_wake(waker)) {
            *slot = Slot::waiting(waker, until);
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

    /// Takes out the wakers of the `Gone` futures (the peer closed; `Dead` futures wait on), to
    /// be woken with [`wake_all`](Self::wake_all) once the lock is released. Their slots stay
    /// taken, as woken.
    pub(crate) fn take_gone(&mut self) -> Waiters {
        match self {
            Waiters::None => Waiters::None,
            Waiters::One(slot) => match slot.take_gone() {
                Some(w) => Waiters::One(Slot::Gone(w)),
                None => Waiters::None,
            },
            Waiters::Many(slots) => {
                let woken: Vec<_> = slots
                    .iter_mut()
                    .filter_map(Slot::take_gone)
                    .map(Slot::Gone)
                    .collect();
                if woken.is_empty() {
                    Waiters::None
                } else {
                    Waiters::Many(woken)
                }
            }
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
        assert_eq!(w.join(&wa, Until::Dead), 0);
        assert!(matches!(w, Waiters::One(Slot::Dead(_))));
        assert_eq!(w.join(&wb, Until::Dead), 1);
        assert_eq!(w.join(&wb, Until::Dead), 2);
        w.leave(1);
        assert_eq!(w.join(&wc, Until::Dead), 1, "the freed slot is taken again");
        w.leave(2);
        w.update(0, &wc, Until::Dead);
        w.update(7, &wa, Until::Dead); // no such slot: nothing happens
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
        w.join(&Waker::from(Arc::new(Panics)), Until::Dead);
        w.join(&wa, Until::Dead);
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
        w.join(&waker, Until::Dead);
        w.leave(0);
        assert!(matches!(w, Waiters::None));
        w.leave(0);
        assert!(matches!(w, Waiters::None));
    }

    /// A FIN wakes the `Gone` futures only; their slots stay taken, and a later death wakes
    /// the `Dead` ones and no `Gone` future twice.
    #[test]
    fn a_fin_wakes_gone_futures_only() {
        let (dead, gone) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (wd, wg) = (Waker::from(dead.clone()), Waker::from(gone.clone()));
        let mut w = Waiters::default();
        assert_eq!(w.join(&wg, Until::Gone), 0);
        w.take_gone().wake_all();
        assert_eq!(gone.0.load(Ordering::SeqCst), 1);
        assert_eq!(w.join(&wd, Until::Dead), 1, "the woken slot stays taken");
        assert_eq!(w.join(&wg, Until::Gone), 2);
        w.take_gone().wake_all();
        assert_eq!(gone.0.load(Ordering::SeqCst), 2);
        assert_eq!(dead.0.load(Ordering::SeqCst), 0, "a FIN woke a Dead future");
        w.update(1, &wd, Until::Dead);
        std::mem::take(&mut w).wake_all();
        assert_eq!(dead.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            gone.0.load(Ordering::SeqCst),
            2,
            "a woken Gone future woken again"
        );
    }
}
