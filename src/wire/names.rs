//! The fixed set of stream command names replscope counts by name; every other command is `Other`.
//!
//! The set is bounded on purpose: it becomes a metric label. It holds the common write commands and the
//! stream's housekeeping (PING, SELECT, REPLCONF, MULTI, EXEC).

macro_rules! command_names {
    ($($variant:ident => $upper:literal, $label:literal;)*) => {
        /// A stream command's name, over a fixed set.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum CommandName {
            $(
                #[doc = concat!("`", $label, "`")]
                $variant,
            )*
            /// Any command outside the set.
            Other,
        }

        impl CommandName {
            /// Every name, `Other` last; `ALL[n.index()] == n`.
            pub const ALL: &'static [CommandName] = &[$(CommandName::$variant,)* CommandName::Other];

            /// The metric label value: the lower-cased command name, or `other`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(CommandName::$variant => $label,)*
                    CommandName::Other => "other",
                }
            }

            /// Looks up an already upper-cased name.
            fn from_upper(upper: &[u8]) -> CommandName {
                match upper {
                    $($upper => CommandName::$variant,)*
                    _ => CommandName::Other,
                }
            }
        }
    };
}

command_names! {
    Ping => b"PING", "ping";
    Select => b"SELECT", "select";
    Replconf => b"REPLCONF", "replconf";
    Multi => b"MULTI", "multi";
    Exec => b"EXEC", "exec";
    Set => b"SET", "set";
    Setex => b"SETEX", "setex";
    Psetex => b"PSETEX", "psetex";
    Setnx => b"SETNX", "setnx";
    Mset => b"MSET", "mset";
    Getset => b"GETSET", "getset";
    Getdel => b"GETDEL", "getdel";
    Append => b"APPEND", "append";
    Setrange => b"SETRANGE", "setrange";
    Incr => b"INCR", "incr";
    Incrby => b"INCRBY", "incrby";
    Incrbyfloat => b"INCRBYFLOAT", "incrbyfloat";
    Decr => b"DECR", "decr";
    Decrby => b"DECRBY", "decrby";
    Del => b"DEL", "del";
    Unlink => b"UNLINK", "unlink";
    Expire => b"EXPIRE", "expire";
    Pexpire => b"PEXPIRE", "pexpire";
    Expireat => b"EXPIREAT", "expireat";
    Pexpireat => b"PEXPIREAT", "pexpireat";
    Persist => b"PERSIST", "persist";
    Hset => b"HSET", "hset";
    Hmset => b"HMSET", "hmset";
    Hdel => b"HDEL", "hdel";
    Hincrby => b"HINCRBY", "hincrby";
    Lpush => b"LPUSH", "lpush";
    Rpush => b"RPUSH", "rpush";
    Lpop => b"LPOP", "lpop";
    Rpop => b"RPOP", "rpop";
    Lset => b"LSET", "lset";
    Ltrim => b"LTRIM", "ltrim";
    Lrem => b"LREM", "lrem";
    Sadd => b"SADD", "sadd";
    Srem => b"SREM", "srem";
    Zadd => b"ZADD", "zadd";
    Zrem => b"ZREM", "zrem";
    Zincrby => b"ZINCRBY", "zincrby";
    Xadd => b"XADD", "xadd";
    Xtrim => b"XTRIM", "xtrim";
    Xdel => b"XDEL", "xdel";
    Publish => b"PUBLISH", "publish";
    Restore => b"RESTORE", "restore";
    Flushdb => b"FLUSHDB", "flushdb";
    Flushall => b"FLUSHALL", "flushall";
}

/// The longest name in the set; longer names are `Other` without a lookup.
pub const MAX_NAME_LEN: usize = 11;

impl CommandName {
    /// Classifies a command name, case-insensitively.
    pub fn classify(name: &[u8]) -> CommandName {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return CommandName::Other;
        }
        let mut upper = [0u8; MAX_NAME_LEN];
        for (dst, src) in upper.iter_mut().zip(name) {
            *dst = src.to_ascii_uppercase();
        }
        CommandName::from_upper(&upper[..name.len()])
    }

    /// Position in [`CommandName::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl serde::Serialize for CommandName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_is_case_insensitive_and_bounded() {
        assert_eq!(CommandName::classify(b"ping"), CommandName::Ping);
        assert_eq!(CommandName::classify(b"SeT"), CommandName::Set);
        assert_eq!(CommandName::classify(b"incrbyfloat"), CommandName::Incrbyfloat);
        assert_eq!(CommandName::classify(b"GETEX"), CommandName::Other);
        assert_eq!(CommandName::classify(b"A-VERY-LONG-COMMAND"), CommandName::Other);
        assert_eq!(CommandName::classify(b""), CommandName::Other);
    }

    #[test]
    fn all_is_indexed_by_index_and_names_fit_the_bound() {
        for (i, n) in CommandName::ALL.iter().enumerate() {
            assert_eq!(n.index(), i);
            assert!(n.as_str().len() <= MAX_NAME_LEN);
            if *n != CommandName::Other {
                assert_eq!(CommandName::classify(n.as_str().as_bytes()), *n);
            }
        }
    }
}
