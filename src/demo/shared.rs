//! [`Shared`]: a value behind a std `Mutex` that is only reached through
//! synchronous closures, so the lock can never be held across an `.await`.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// A value shared by a server's handlers and the handle that seeds and
/// inspects it. Every access is a closure run under the lock.
#[derive(Debug, Default)]
pub struct Shared<T> {
    state: Mutex<T>,
}

impl<T> Shared<T> {
    pub fn new(value: T) -> Self {
        Shared {
            state: Mutex::new(value),
        }
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        // A panic while holding the lock cannot leave this plain data
        // half-updated in a way that matters more than losing the server.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, with write access.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }

    /// Runs `f` under the lock, read-only.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.lock())
    }
}
