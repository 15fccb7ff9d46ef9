//! The injected faults that acted on a link, as its story keeps them: which fault, of which type, did
//! what and when. The fault engine decides; the link only remembers.

use crate::time::Timestamp;

/// How many fault actions a link keeps in its story.
pub const MAX_FAULT_TOUCHES: usize = 64;

crate::labelled! {
    /// What a fault does, as a label (metrics, API, logs). Adding a fault type is a variant here and one in
    /// `fault::FaultKind`; the compiler then asks for the rest.
    pub enum FaultType {
        /// Caps bytes per second.
        Bandwidth => "bandwidth",
        /// Holds chunks back.
        Latency => "latency",
        /// Stops forwarding for a while.
        Stall => "stall",
        /// Closes the link.
        Cut => "cut",
        /// Closes the link after a number of bytes.
        Limit => "limit",
    }
}

impl FaultType {
    /// Whether a fault of this type ends the link it acts on (its close is then `fault_injected`).
    pub const fn closes_link(self) -> bool {
        match self {
            FaultType::Cut | FaultType::Limit => true,
            FaultType::Bandwidth | FaultType::Latency | FaultType::Stall => false,
        }
    }
}

/// An injected fault acting on a link.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FaultTouch {
    /// The fault's id.
    pub fault: u64,
    /// Its type.
    pub kind: FaultType,
    /// What it did.
    pub action: String,
    /// When.
    pub at: Timestamp,
}
