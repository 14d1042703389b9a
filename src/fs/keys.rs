//! The daemon's key path: file header → DEK cache → KMS unwrap; and new DEKs for new files,
//! made ahead by a [`pool`] in the mounted daemon.

mod pool;

use crate::cache::DekCache;
use crate::crypto::Key256;
use crate::format::{self, FileCipher, FileHeader, FormatError, FsId, HEADER_LEN};
use crate::kms::{DataKeySpec, KeyService, KmsError};
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
    /// The KMS refused or could not be reached.
    #[error("{0}")]
    Kms(#[from] KmsError),
    /// Reading or writing the header failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where file keys come from: the cache, else the KMS.
pub struct KeyPath {
    kms: Arc<dyn KeyService>,
    cache: DekCache,
    fs_id: FsId,
    key_id: Uuid,
    pool: Option<Arc<pool::Pool>>,
}

impl Drop for KeyPath {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.stop();
        }
    }
}

/// Makes a DEK and file id for a new file of filesystem `fs_id`, wrapped by `key_id`.
fn make_fresh(kms: &dyn KeyService, fs_id: &FsId, key_id: Uuid) -> Result<pool::Fresh, KmsError> {
    let file_id: format::FileId = crate::crypto::random_array();
    let context = format::dek_context(fs_id, &file_id);
    let data_key = kms.generate_data_key(key_id, DataKeySpec::Aes256, Some(&context))?;
    let dek =
        Key256::from_slice(data_key.plaintext.expose_secret()).ok_or_else(|| KmsError::Other {
            status: 200,
            title: "Bad Data Key".into(),
            detail: format!(
                "generate-data-key returned {} bytes, expected 32",
                data_key.plaintext.len()
            ),
        })?;
    let cipher = Arc::new(FileCipher::new(&dek, file_id));
    Ok(pool::Fresh::new(file_id, cipher, data_key.ciphertext))
}

impl KeyPath {
    /// A key path for filesystem `fs_id` whose new files are wrapped by `key_id`.
    pub fn new(kms: Arc<dyn KeyService>, cache: DekCache, fs_id: FsId, key_id: Uuid) -> Self {
        KeyPath {
            kms,
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

    /// The cipher of an encoded header: cache hit, or KMS unwrap then header authentication.
    pub fn cipher_for(&self, bytes: &[u8; HEADER_LEN]) -> Result<Arc<FileCipher>, KeyError> {
        let header = FileHeader::parse(bytes)?;
        if let Some(cipher) = self.cache.get(&header.file_id, &header.wrapped_dek) {
            cipher.verify_header(bytes)?;
            return Ok(cipher);
        }
        let context = format::dek_context(&self.fs_id, &header.file_id);
        let dek = match self
            .kms
            .decrypt(header.key_id, &header.wrapped_dek, Some(&context))
        {
            Ok(plain) => {
                Key256::from_slice(plain.expose_secret()).ok_or(FormatError::HeaderAuth)?
            }
            Err(KmsError::InvalidCiphertext) => return Err(FormatError::HeaderAuth.into()),
            Err(e) => return Err(e.into()),
        };
        let cipher = Arc::new(FileCipher::new(&dek, header.file_id));
        cipher.verify_header(bytes)?;
        self.cache
            .insert(&header.file_id, &header.wrapped_dek, cipher.clone());
        Ok(cipher)
    }

    /// Gives an empty file a fresh DEK and file id (made ahead if one is ready, else now) and
    /// writes its header.
    pub fn create_header(&self, file: &File) -> Result<Arc<FileCipher>, KeyError> {
        let fresh = match self.pool.as_ref().and_then(|pool| pool.take()) {
            Some(fresh) => fresh,
            None => make_fresh(&*self.kms, &self.fs_id, self.key_id)?,
        };
        let (file_id, cipher) = (fresh.file_id, fresh.cipher);
        let header = FileHeader {
            file_id,
            key_id: self.key_id,
            wrapped_dek: fresh.wrapped,
        };
        let bytes = header.encode(&cipher)?;
        // Under the advisory lock `kmsfs rewrap` also takes: it never rewrites a header that
        // changed since it read it.
        file.lock()?;
        let written = file.write_all_at(&bytes, 0);
        file.unlock()?;
        written?;
        self.cache
            .insert(&file_id, &header.wrapped_dek, cipher.clone());
        Ok(cipher)
    }
}
