//! The DEK cache: unwrapped file keys by (file id, wrapped DEK), bounded in entries and age.
//!
//! A hit saves a KMS call on open. The TTL bounds how long a key the KMS would now refuse
//! (disabled, deleted) keeps opening files. Evicted entries are dropped, which zeroizes the
//! derived key bytes we own (see docs/SECURITY.md for what `ring` keeps).

use crate::format::{FileCipher, FileId};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Counters, logged at unmount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that needed the KMS (absent or expired).
    pub misses: u64,
    /// Entries pushed out by capacity.
    pub evictions: u64,
    /// Entries dropped because they were older than the TTL.
    pub expirations: u64,
}

type CacheKey = (FileId, Vec<u8>);

struct Entry {
    cipher: Arc<FileCipher>,
    inserted: Instant,
}

struct Inner {
    entries: Option<LruCache<CacheKey, Entry>>,
    stats: CacheStats,
}

/// An LRU cache of unwrapped file keys.
pub struct DekCache {
    inner: Mutex<Inner>,
    ttl: Duration,
}

impl DekCache {
    /// A cache of at most `capacity` entries (0 disables it), each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        DekCache {
            inner: Mutex::new(Inner {
                entries: NonZeroUsize::new(capacity).map(LruCache::new),
                stats: CacheStats::default(),
            }),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The cache holds no invariant a panicking holder could break half-way.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached cipher of this file and wrapped DEK, if present and younger than the TTL.
    pub fn get(&self, file_id: &FileId, wrapped_dek: &[u8]) -> Option<Arc<FileCipher>> {
        let mut inner = self.lock();
        let Inner { entries, stats } = &mut *inner;
        let Some(entries) = entries else {
            stats.misses += 1;
            return None;
        };
        let key = (*file_id, wrapped_dek.to_vec());
        match entries.get(&key) {
            Some(entry) if entry.inserted.elapsed() <= self.ttl => {
                stats.hits += 1;
                Some(entry.cipher.clone())
            }
            Some(_) => {
                entries.pop(&key);
                stats.expirations += 1;
                stats.misses += 1;
                None
            }
            None => {
                stats.misses += 1;
                None
            }
        }
    }

    /// Caches `cipher` for this file and wrapped DEK.
    pub fn insert(&self, file_id: &FileId, wrapped_dek: &[u8], cipher: Arc<FileCipher>) {
        let mut inner = self.lock();
        let Inner { entries, stats } = &mut *inner;
        let Some(entries) = entries else { return };
        let entry = Entry {
            cipher,
            inserted: Instant::now(),
        };
        if let Some((old_key, _)) = entries.push((*file_id, wrapped_dek.to_vec()), entry)
            && (old_key.0 != *file_id || old_key.1 != wrapped_dek)
        {
            stats.evictions += 1;
        }
    }

    /// Drops every entry (e.g. at unmount).
    pub fn clear(&self) {
        if let Some(entries) = &mut self.lock().entries {
            entries.clear();
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.as_ref().map_or(0, LruCache::len)
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key256;

    fn cipher(id: u8) -> Arc<FileCipher> {
        Arc::new(FileCipher::new(&Key256::random(), [id; 16]))
    }

    #[test]
    fn hit_miss_and_eviction_counts() {
        let cache = DekCache::new(2, Duration::from_secs(60));
        assert!(cache.get(&[1; 16], b"w1").is_none());
        cache.insert(&[1; 16], b"w1", cipher(1));
        cache.insert(&[2; 16], b"w2", cipher(2));
        assert!(cache.get(&[1; 16], b"w1").is_some());
        cache.insert(&[3; 16], b"w3", cipher(3)); // evicts 2, the least recently used
        assert!(cache.get(&[2; 16], b"w2").is_none());
        assert!(cache.get(&[3; 16], b"w3").is_some());
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 2,
                evictions: 1,
                expirations: 0
            }
        );
    }

    #[test]
    fn wrapped_dek_is_part_of_the_key() {
        let cache = DekCache::new(4, Duration::from_secs(60));
        cache.insert(&[1; 16], b"old", cipher(1));
        assert!(cache.get(&[1; 16], b"new").is_none());
    }

    #[test]
    fn entries_expire_after_ttl() {
        let cache = DekCache::new(4, Duration::from_millis(0));
        cache.insert(&[1; 16], b"w", cipher(1));
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.get(&[1; 16], b"w").is_none());
        assert_eq!(cache.stats().expirations, 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = DekCache::new(0, Duration::from_secs(60));
        cache.insert(&[1; 16], b"w", cipher(1));
        assert!(cache.get(&[1; 16], b"w").is_none());
        assert_eq!(cache.len(), 0);
    }
}
