//! The emulator exercised through a real `kube::Client`, as the operator will use it.

mod common;
mod crd;
mod crud;
mod faults;
mod ssa;
mod watch;
