//! Locks that are taken even when a previous holder panicked.
//!
//! Weir's critical sections leave the data they guard consistent at every step that can panic
//! (they update in place and never hold a half-built value across a call that may fail), so a
//! poisoned lock carries no broken state worth refusing; refusing it would turn one panicked
//! task into a node whose every later request panics too. Every `Mutex` and `RwLock` in Weir is
//! taken through these.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] that takes a poisoned lock anyway.
pub trait MutexExt<T: ?Sized> {
    /// The guard, whether or not a previous holder panicked.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`RwLock::read`] and [`RwLock::write`] that take a poisoned lock anyway.
pub trait RwLockExt<T: ?Sized> {
    /// A shared guard, whether or not a previous writer panicked.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// The exclusive guard, whether or not a previous writer panicked.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_with_its_data() {
        let m = std::sync::Arc::new(Mutex::new(5));
        let l = std::sync::Arc::new(RwLock::new(7));
        let (m2, l2) = (m.clone(), l.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = l2.write().unwrap();
            panic!("poison both");
        })
        .join();
        assert!(m.is_poisoned() && l.is_poisoned());
        assert_eq!(*m.locked(), 5);
        assert_eq!(*l.read_locked(), 7);
        *l.write_locked() = 8;
        assert_eq!(*l.read_locked(), 8);
    }
}
