//! The agent's lifecycle states and their names on the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The agent's lifecycle, in the order it normally moves through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Process started, nothing loaded yet.
    Starting,
    /// Reading the image and indexing its layers.
    Indexing,
    /// Unpacking the image's layers for `recorder run`.
    Unpacking,
    /// Ready and waiting for the target: the eBPF programs are loaded and the subscription to
    /// containerd's task events is live, so a container started from now on is armed before
    /// its entrypoint runs. The signal to start the container (`recorder status --wait armed`).
    Armed,
    /// The filter is armed on the target, whose image is not indexed yet (a pod's, which the
    /// kubelet pulls after the recorder started): its events are held while the image is
    /// indexed, and recorded once it is. Nothing of the target is missed from here on.
    Buffering,
    /// The filter is armed on the target, the image is indexed, and events are being recorded.
    Tracing,
    /// Writing the record out.
    Committing,
    /// The record is written; `recordDigest` is set.
    Done,
    /// Something went wrong; `error` says what.
    Failed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 9] = [
        State::Starting,
        State::Indexing,
        State::Unpacking,
        State::Armed,
        State::Buffering,
        State::Tracing,
        State::Committing,
        State::Done,
        State::Failed,
    ];

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Indexing => "indexing",
            State::Unpacking => "unpacking",
            State::Armed => "armed",
            State::Buffering => "buffering",
            State::Tracing => "tracing",
            State::Committing => "committing",
            State::Done => "done",
            State::Failed => "failed",
        }
    }

    /// Whether no further transition can happen from here.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Done | State::Failed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`State::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown state {0:?} (expected one of {names})",
    names = State::ALL.map(State::as_str).join(", ")
)]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// One entry of the state history: a state and when it began (RFC 3339, UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// The state entered.
    pub state: State,
    /// When it was entered.
    pub since: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>().unwrap(), state);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
        }
        let Err(error) = "running".parse::<State>() else {
            panic!("running parsed")
        };
        assert_eq!(
            error.to_string(),
            "unknown state \"running\" (expected one of starting, indexing, unpacking, armed, \
             buffering, tracing, committing, done, failed)"
        );
    }
}
