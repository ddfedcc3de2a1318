//! One spare buffer per thread and use, lent to whichever capture reads or writes now.
//!
//! A capture holds a buffer only while it reads a pipe or writes its file, never while
//! it waits: a thousand quiet services cost no buffers, and a busy one reuses the same
//! memory read after read. A buffer still lent when another capture on the same thread
//! asks (its lender awaited meanwhile) is replaced by a new one; the larger of the two
//! is kept when both come back.

use std::cell::Cell;
use std::thread::LocalKey;

/// Where buffers wait between uses.
pub(crate) type Spare = LocalKey<Cell<Vec<u8>>>;

thread_local! {
    /// Buffers that pipes are read into.
    pub(crate) static READS: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Buffers that lines are formatted into before a write.
    pub(crate) static WRITES: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The thread's spare buffer, or an empty one (with no capacity) if it is lent.
pub(crate) fn take(spare: &'static Spare) -> Vec<u8> {
    spare.with(Cell::take)
}

/// Returns `buf` (as it is: the caller clears it if it must) for the next [`take`].
pub(crate) fn give_back(spare: &'static Spare, buf: Vec<u8>) {
    spare.with(|slot| {
        let other = slot.take();
        slot.set(if other.capacity() > buf.capacity() {
            other
        } else {
            buf
        });
    });
}
