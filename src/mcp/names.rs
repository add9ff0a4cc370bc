//! How employees name MCP tools: `mcp:<server>/<tool>` (or `mcp:<server>/*` for every
//! tool of a server) in `allowed_tools` and `approval_tools`, and the model-safe alias a
//! tool is offered under (vendors accept only `[A-Za-z0-9_-]{1,64}` as a function name).

use sha2::{Digest, Sha256};

/// The prefix of an MCP tool entry.
pub const PREFIX: &str = "mcp:";
/// The prefix of the alias a tool is offered to the model under.
pub const ALIAS_PREFIX: &str = "mcp__";
/// Longest entry in `allowed_tools`.
pub const MAX_ENTRY: usize = 200;

/// `<server>` of an entry: what an MCP server's `name` may be.
pub fn valid_server_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `<tool>` of an entry: the characters MCP tool names use (1–128).
pub fn valid_tool_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
}

/// An `mcp:<server>/<tool>` entry; `tool` is `*` for every tool of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub server: &'a str,
    pub tool: &'a str,
}

impl<'a> Entry<'a> {
    /// The entry `s` names, when it is a well-formed MCP entry.
    pub fn parse(s: &'a str) -> Option<Self> {
        let rest = s.strip_prefix(PREFIX)?;
        let (server, tool) = rest.split_once('/')?;
        (s.len() <= MAX_ENTRY
            && valid_server_name(server)
            && (tool == "*" || valid_tool_name(tool)))
        .then_some(Entry { server, tool })
    }

    /// Whether this entry covers `tool` of `server`.
    pub fn covers(&self, server: &str, tool: &str) -> bool {
        self.server == server && (self.tool == "*" || self.tool == tool)
    }
}

/// Whether an entry list (`allowed_tools` or `approval_tools`) covers `tool` of `server`.
pub fn listed(entries: &[String], server: &str, tool: &str) -> bool {
    entries
        .iter()
        .filter_map(|e| Entry::parse(e))
        .any(|e| e.covers(server, tool))
}

/// Whether `entry` (an MCP entry) is covered by one of `entries` — an approval entry
/// must be within the allowed ones.
pub fn entry_within(entry: &Entry<'_>, entries: &[String]) -> bool {
    entries
        .iter()
        .filter_map(|e| Entry::parse(e))
        .any(|a| a.server == entry.server && (a.tool == "*" || a.tool == entry.tool))
}

/// The canonical name of a tool: `mcp:<server>/<tool>`.
pub fn canonical(server: &str, tool: &str) -> String {
    format!("{PREFIX}{server}/{tool}")
}

/// The name a tool is offered to the model under: `mcp__<server>__<tool>` with every
/// character a vendor refuses replaced by `_`, and past 64 characters cut with a hash of
/// the canonical name, so two tools never share an alias.
pub fn alias(server: &str, tool: &str) -> String {
    let safe: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let full = format!("{ALIAS_PREFIX}{server}__{safe}");
    if full.len() <= 64 && safe == tool {
        return full;
    }
    let hash = hex::encode(Sha256::digest(canonical(server, tool).as_bytes()));
    let keep: String = full.chars().take(55).collect();
    format!("{keep}_{}", &hash[..8])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn entries_parse_and_cover() {
        let e = Entry::parse("mcp:files/read_file").unwrap();
        assert_eq!((e.server, e.tool), ("files", "read_file"));
        assert!(e.covers("files", "read_file"));
        assert!(!e.covers("files", "write_file"));
        let all = Entry::parse("mcp:files/*").unwrap();
        assert!(all.covers("files", "anything"));
        assert!(!all.covers("other", "anything"));
        for bad in [
            "files/read",
            "mcp:files",
            "mcp:/x",
            "mcp:a b/x",
            "mcp:a/",
            "mcp:a/x y",
        ] {
            assert!(Entry::parse(bad).is_none(), "{bad}");
        }
        let list = vec!["calculator".to_string(), "mcp:files/*".to_string()];
        assert!(listed(&list, "files", "read"));
        assert!(!listed(&list, "git", "read"));
        let one = Entry::parse("mcp:files/read").unwrap();
        assert!(entry_within(&one, &list));
        assert!(!entry_within(&one, &["mcp:files/write".to_string()]));
    }

    #[test]
    fn aliases_are_vendor_safe_and_distinct() {
        assert_eq!(alias("files", "read_file"), "mcp__files__read_file");
        let a = alias("files", "read.file");
        let b = alias("files", "read_file");
        assert_ne!(a, b, "a replaced character must not collide");
        let long = alias("a-server-with-a-long-name", &"t".repeat(100));
        assert!(long.len() <= 64, "{long}");
        for n in [a, long] {
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{n}"
            );
        }
    }
}
