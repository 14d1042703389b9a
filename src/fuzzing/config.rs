//! Target of a cipher directory's `kmsfs.conf` and the user's record of known endpoints.

use super::scratch_dir;
use crate::config::known::KnownEndpoints;
use crate::config::{CONF_NAME, CipherConfig};

/// `kmsfs.conf` as [`CipherConfig::load`] reads it from a cipher directory: a configuration that
/// loads has a valid filesystem id, spelled in hex digits as its bytes are written back (upper
/// or lower case), and loads again to itself when written out. The same bytes as a record of known endpoints.
pub fn conf(data: &[u8]) {
    let dir = scratch_dir();
    let path = dir.join(CONF_NAME);
    std::fs::write(&path, data).expect("BUG: the scratch directory is writable");
    if let Ok(config) = CipherConfig::load(&dir) {
        let fs_id = config
            .fs_id()
            .expect("BUG: a loaded configuration has an fs-id");
        assert!(
            crate::format::hex(&fs_id).eq_ignore_ascii_case(&config.fs_id),
            "an fs-id loads from text that is not its hex"
        );
        let text = serde_json::to_vec_pretty(&config).expect("BUG: a configuration serializes");
        std::fs::write(&path, text).expect("BUG: the scratch directory is writable");
        let again = CipherConfig::load(&dir).expect("BUG: a written configuration loads");
        assert_eq!(again, config);
    }
    let _ = KnownEndpoints::load(&path);
}
