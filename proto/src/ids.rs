//! The two numbers every part of Ensemble speaks of, as types, so one is
//! never taken for the other: a session's id and a zxid. Both print in hex
//! (`0x…`), as ZooKeeper prints them; on the wire and on disk they are the
//! plain `u64` inside.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A session's id: the zxid of the entry that opened it, shifted left by 16
/// bits, plus the session's position in that entry. The same on every
/// replica, never reused; public (every ephemeral znode names its owner),
/// so acting for a session takes its secret as well.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

/// A zxid: the Raft log index of the entry that carried a change. Every
/// write gets one; they only grow. "Applied zxid", "commit zxid" and "last
/// zxid seen" are positions in the same log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Zxid(pub u64);

macro_rules! hex_id {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{:x}", self.0)
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl From<u64> for $t {
            fn from(v: u64) -> Self {
                $t(v)
            }
        }

        impl From<$t> for u64 {
            fn from(v: $t) -> u64 {
                v.0
            }
        }
    };
}

hex_id!(SessionId);
hex_id!(Zxid);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_in_hex() {
        assert_eq!(SessionId(0x1a0000).to_string(), "0x1a0000");
        assert_eq!(format!("{:?}", Zxid(42)), "0x2a");
        assert_eq!(u64::from(Zxid::from(7)), 7);
    }
}
