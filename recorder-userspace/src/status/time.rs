//! The status side's timestamps: [`crate::time`]'s, under the names this module uses.

pub(crate) use crate::time::{rfc3339_millis as rfc3339, unix_seconds};
