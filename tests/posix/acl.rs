//! POSIX ACLs as the kernel stores them in the `system.posix_acl_access` and
//! `system.posix_acl_default` xattrs, written and read by the scenarios themselves (no `acl`
//! package needed).
//!
//! Layout (little-endian): a u32 version, 2; then one 8-byte entry per ACL entry, in the
//! order USER_OBJ, USER (ascending ids), GROUP_OBJ, GROUP (ascending ids), MASK, OTHER:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..2 | tag: USER_OBJ 0x01, USER 0x02, GROUP_OBJ 0x04, GROUP 0x08, MASK 0x10, OTHER 0x20 |
//! | 2..4 | permission bits: r 4, w 2, x 1 |
//! | 4..8 | uid or gid for USER and GROUP, 0xFFFFFFFF otherwise |
//!
//! Scenarios write ACLs as text, `u::rw-,u:other:r--,g::r--,m::rw-,o::---`, with the ids of
//! the scenario language (`me`, `other`, `g`, a number).

use super::lang::{Id, Run};

/// One entry of a POSIX ACL: tag, id and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub id: Option<Id>,
    pub perm: u16,
}

pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;

/// Parses the text form of an ACL.
pub fn parse_spec(spec: &str) -> Result<Vec<AclEntry>, String> {
    spec.split(',')
        .map(|e| {
            let parts: Vec<&str> = e.split(':').collect();
            let [kind, id, perm] = parts[..] else {
                return Err(format!("bad ACL entry `{e}` (want kind:id:perm)"));
            };
            let named = !id.is_empty();
            let tag = match (kind, named) {
                ("u", false) => ACL_USER_OBJ,
                ("u", true) => ACL_USER,
                ("g", false) => ACL_GROUP_OBJ,
                ("g", true) => ACL_GROUP,
                ("m", false) => ACL_MASK,
                ("o", false) => ACL_OTHER,
                _ => return Err(format!("bad ACL entry `{e}`")),
            };
            let bits = perm.as_bytes();
            if bits.len() != 3 {
                return Err(format!("bad ACL permissions `{perm}`"));
            }
            let perm = u16::from(bits[0] == b'r') << 2
                | u16::from(bits[1] == b'w') << 1
                | u16::from(bits[2] == b'x');
            let id = if named { Some(Id::parse(id)?) } else { None };
            Ok(AclEntry { tag, id, perm })
        })
        .collect()
}

const VERSION: u32 = 2;

/// The xattr value of `entries`, with the ids of `run`.
pub fn to_xattr(entries: &[AclEntry], run: Run) -> Vec<u8> {
    let mut bytes = VERSION.to_le_bytes().to_vec();
    for e in entries {
        bytes.extend_from_slice(&e.tag.to_le_bytes());
        bytes.extend_from_slice(&e.perm.to_le_bytes());
        let id = e.id.map_or(u32::MAX, |id| id.resolve(run));
        bytes.extend_from_slice(&id.to_le_bytes());
    }
    bytes
}

/// An xattr value as text (`v2 u::rw-,u:65533:r--,...`, numeric ids), or what is wrong with it.
pub fn from_xattr(bytes: &[u8]) -> String {
    if bytes.len() < 4 || !(bytes.len() - 4).is_multiple_of(8) {
        return format!(
            "malformed ACL: {} bytes, expected 4 + 8 per entry",
            bytes.len()
        );
    }
    let version = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let entries: Vec<String> = bytes[4..]
        .chunks_exact(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let (kind, named) = match tag {
                ACL_USER_OBJ => ("u", false),
                ACL_USER => ("u", true),
                ACL_GROUP_OBJ => ("g", false),
                ACL_GROUP => ("g", true),
                ACL_MASK => ("m", false),
                ACL_OTHER => ("o", false),
                _ => ("?", true),
            };
            let bits: String = [(4, 'r'), (2, 'w'), (1, 'x')]
                .iter()
                .map(|&(b, ch)| if perm & b != 0 { ch } else { '-' })
                .collect();
            let id = if named { id.to_string() } else { String::new() };
            format!("{kind}:{id}:{bits}")
        })
        .collect();
    format!("v{version} {}", entries.join(","))
}
