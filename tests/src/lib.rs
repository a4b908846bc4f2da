//! Shared helpers for the end-to-end tests.

pub mod root;
pub mod image_fixtures;
