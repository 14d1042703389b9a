//! The daemon's key path: file header → DEK cache → KMS unwrap; and new DEKs for new files,
//! made ahead by a [`pool`] in the mounted daemon.

mod pool;

use crate::cache::DekCache;
use crate::crypto::Key256;
use crate::format::{
    self, FileCipher, FileHeader, FormatError, FsId, HEADER_LEN, HeaderVersion, Keying,
};
use crate::kms::{DataKeySpec, KeyService, KmsError, Refusal};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use uuid::Uuid;

/// Why a file's key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The header is damaged or belongs elsewhere.
    #[error("{0}")]
    Corrupt(#[from] FormatError),
    /// The KMS refused to unwrap this file's DEK under the key its header names.
    #[error("{0}")]
    Refused(KeyRefusal),
    /// The KMS could not be reached or failed (or, making a new file's key, refused).
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// Reading or writing the header failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The KMS's refusal to unwrap a file's DEK under the key its header names (no such key, a
/// disabled key, a request it finds malformed): the header was changed, or the key is gone or
/// disabled. About this one file, unlike a KMS that cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the KMS refuses key {key_id}, the key the header names: {}: {detail}", refusal.title())]
pub struct KeyRefusal {
    /// The key id the header names.
    pub key_id: Uuid,
    /// The KMS's rule.
    pub refusal: Refusal,
    /// The KMS's detail sentence.
    pub detail: String,
}

/// Where file keys come from: the cache, else the KMS.
pub struct KeyPath {
    kms: Arc<dyn KeyService>,
    cache: DekCache,
    fs_id: FsId,
    key_id: Uuid,
    pool: Option<Arc<pool::Pool>>,
    meter: Arc<super::stats::KmsMeter>,
}

impl Drop for KeyPath {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.stop();
        }
    }
}

/// Makes a DEK and file id for a new file of filesystem `fs_id` (its header of the newest
/// version), wrapped by `key_id`.
fn make_fresh(kms: &dyn KeyService, fs_id: &FsId, key_id: Uuid) -> Result<pool::Fresh, KmsError> {
    let file_id: format::FileId = crate::crypto::random_array();
    let context = format::dek_context(HeaderVersion::NEWEST, fs_id, &file_id, &key_id);
    let data_key = kms.generate_data_key(key_id, DataKeySpec::Aes256, Some(&context))?;
    let dek = Key256::from_slice(data_key.plaintext.expose_secret()).ok_or_else(|| {
        KmsError::Malformed {
            operation: "generate-data-key",
            what: format!("a data key of {} bytes, not 32", data_key.plaintext.len()),
            source: None,
        }
    })?;
    let cipher = Arc::new(FileCipher::new(&dek, file_id, HeaderVersion::NEWEST));
    Ok(pool::Fresh::new(file_id, cipher, data_key.ciphertext))
}

impl KeyPath {
    /// A key path for filesystem `fs_id` whose new files are wrapped by `key_id`.
    pub fn new(kms: Arc<dyn KeyService>, cache: DekCache, fs_id: FsId, key_id: Uuid) -> Self {
        let meter = Arc::new(super::stats::KmsMeter::default());
        KeyPath {
            kms: Arc::new(super::stats::MeteredKms::new(kms, meter.clone())),
            meter,
            cache,
            fs_id,
            key_id,
            pool: None,
        }
    }

    /// Makes up to `size` DEKs ahead for new files, in `threads` background threads (start
    /// them in the process that serves the mount: threads do not survive `fork`).
    pub fn with_pool(mut self, size: usize, threads: usize) -> Self {
        let (kms, fs_id, key_id) = (self.kms.clone(), self.fs_id, self.key_id);
        match pool::Pool::start(size, threads, move || make_fresh(&*kms, &fs_id, key_id)) {
            Ok(pool) => self.pool = Some(pool),
            Err(e) => tracing::warn!("cannot start making data keys ahead: {e}"),
        }
        self
    }

    /// The KMS behind the cache.
    pub fn kms(&self) -> Arc<dyn KeyService> {
        self.kms.clone()
    }

    /// The KMS calls made so far (every call goes through the meter).
    pub fn kms_meter(&self) -> &super::stats::KmsMeter {
        &self.meter
    }

    /// The DEK cache (for its counters).
    pub fn cache(&self) -> &DekCache {
        &self.cache
    }

    /// Reads the header of a non-empty cipher file, unwraps its DEK (cache first) and
    /// authenticates the header.
    pub fn open_header(&self, file: &File) -> Result<Arc<FileCipher>, KeyError> {
        let mut bytes = [0u8; HEADER_LEN];
        let n = file.read_at(&mut bytes, 0)?;
        if n < HEADER_LEN {
            // read_at may return short only at EOF for regular files.
            return Err(FormatError::ShortHeader(n).into());
        }
        self.cipher_for(&bytes)
    }

    /// The cipher of an encoded header: a cache hit (these very 512 bytes were authenticated
    /// before), or a KMS unwrap under the header's context then the header's tag.
    pub fn cipher_for(&self, bytes: &[u8; HEADER_LEN]) -> Result<Arc<FileCipher>, KeyError> {
        let header = FileHeader::parse(bytes)?;
        if let Some(cipher) = self.cache.get(bytes) {
            cipher.verify_header(bytes)?;
            return Ok(cipher);
        }
        let context = header.dek_context(&self.fs_id);
        let dek = match self
            .kms
            .decrypt(header.key_id, &header.wrapped_dek, Some(&context))
        {
            Ok(plain) => {
                Key256::from_slice(plain.expose_secret()).ok_or(FormatError::HeaderAuth)?
            }
            Err(KmsError::InvalidCiphertext) => return Err(FormatError::HeaderAuth.into()),
            Err(KmsError::Refused { refusal, detail }) => {
                return Err(KeyError::Refused(KeyRefusal {
                    key_id: header.key_id,
                    refusal,
                    detail,
                }));
            }
            Err(e) => return Err(e.into()),
        };
        let mut cipher = FileCipher::new(&dek, header.file_id, header.version);
        if header.keying != Keying::default() {
            cipher = cipher.with_keying(header.keying);
        }
        let cipher = Arc::new(cipher);
        cipher.verify_header(bytes)?;
        self.cache.insert(bytes, cipher.clone());
        Ok(cipher)
    }

    /// Gives an empty file a fresh DEK and file id (made ahead if one is ready, else now) and
    /// writes its header, with `seals` blocks reserved for its content key.
    pub fn create_header(&self, file: &File, seals: u64) -> Result<Arc<FileCipher>, KeyError> {
        let fresh = match self.pool.as_ref().and_then(|pool| pool.take()) {
            Some(fresh) => fresh,
            None => make_fresh(&*self.kms, &self.fs_id, self.key_id)?,
        };
        let file_id = fresh.file_id;
        let keying = Keying {
            seals,
            ..Keying::default()
        };
        let cipher = Arc::new(fresh.cipher.with_keying(keying));
        let header = FileHeader {
            version: cipher.header_version(),
            file_id,
            key_id: self.key_id,
            wrapped_dek: fresh.wrapped,
            keying,
        };
        let bytes = header.encode(&cipher)?;
        // Under the advisory lock `kmsfs rewrap` also takes: it never rewrites a header that
        // changed since it read it.
        file.lock()?;
        let written = file.write_all_at(&bytes, 0);
        file.unlock()?;
        written?;
        self.cache.insert(&bytes, cipher.clone());
        Ok(cipher)
    }
}

impl KeyPath {
    /// Rewrites the keying of a version 2 file's header whose cipher is `cipher` (its content
    /// key's epoch and seal count), under the advisory lock `kmsfs rewrap` takes, keeping the
    /// wrap slot as it is on disk now. Returns the cipher of the new header.
    pub fn rewrite_keying(
        &self,
        file: &File,
        cipher: &FileCipher,
        keying: Keying,
    ) -> Result<Arc<FileCipher>, KeyError> {
        let next = Arc::new(cipher.with_keying(keying));
        file.lock()?;
        let result = (|| {
            let mut bytes = [0u8; HEADER_LEN];
            let n = file.read_at(&mut bytes, 0)?;
            if n < HEADER_LEN {
                return Err(KeyError::from(FormatError::ShortHeader(n)));
            }
            cipher.verify_header(&bytes)?;
            let header = FileHeader {
                keying,
                ..FileHeader::parse(&bytes)?
            };
            let bytes = header.encode(&next)?;
            file.write_all_at(&bytes, 0)?;
            Ok(bytes)
        })();
        file.unlock()?;
        let bytes = result?;
        self.cache.insert(&bytes, next.clone());
        Ok(next)
    }
}

#[cfg(test)]
mod tests;

/// A version 1 header as earlier builds wrote it (a new random file id, a DEK made by `kms`
/// under `key` in filesystem `fs_id`'s context), encoded, with the cipher of its file (tests).
#[cfg(test)]
pub(crate) fn v1_header_for_tests(
    kms: &dyn KeyService,
    key: Uuid,
    fs_id: &crate::format::FsId,
) -> ([u8; crate::format::HEADER_LEN], FileCipher) {
    let file_id: crate::format::FileId = crate::crypto::random_array();
    let header = FileHeader {
        version: HeaderVersion::V1,
        file_id,
        key_id: key,
        wrapped_dek: Vec::new(),
        keying: crate::format::Keying::default(),
    };
    let data_key = kms
        .generate_data_key(key, DataKeySpec::Aes256, Some(&header.dek_context(fs_id)))
        .expect("data key");
    let dek = Key256::from_slice(data_key.plaintext.expose_secret()).expect("32 bytes");
    let cipher = FileCipher::new(&dek, file_id, HeaderVersion::V1);
    let header = FileHeader {
        wrapped_dek: data_key.ciphertext,
        ..header
    };
    (header.encode(&cipher).expect("fits"), cipher)
}
