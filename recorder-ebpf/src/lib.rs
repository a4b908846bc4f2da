#![no_std]
// The programs live in the `recorder` binary target; this library exists so that
// recorder-userspace can build-depend on the crate and be rebuilt when it changes.
