//! Errors on one line. The library's errors chain: each message names the operation and keeps
//! its cause in `source()`, so a cause is printed once (anyhow's `Caused by:`). Where one line
//! is wanted (the status socket's `error`, a termination message, a log field), [`Chain`]
//! joins the message and its causes as `error: cause: cause`, as anyhow's `{:#}` does.

use std::error::Error;
use std::fmt;

/// An error and its causes on one line.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("committing failed")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Transparent(Outer);

    #[test]
    fn each_cause_once_in_order() {
        for (error, want) in [
            (
                Box::new(Outer(std::io::Error::other("disk full"))) as Box<dyn Error>,
                "committing failed: disk full",
            ),
            (
                Box::new(Transparent(Outer(std::io::Error::other("gone")))),
                "committing failed: gone",
            ),
            (Box::new(std::io::Error::other("alone")), "alone"),
        ] {
            assert_eq!(Chain(&*error).to_string(), want);
        }
    }
}
