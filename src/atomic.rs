//! 64-bit atomic counters on every board. ARM, x86-64 and RISC-V have 64-bit atomics and use
//! std's; 32-bit MIPS has none, so there the same type comes from portable-atomic, which builds
//! it on 32-bit ones. Counters and ids import `AtomicU64` from here, never from std.

#[cfg(not(target_has_atomic = "64"))]
pub use portable_atomic::AtomicU64;
#[cfg(target_has_atomic = "64")]
pub use std::sync::atomic::AtomicU64;
