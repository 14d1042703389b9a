//! The DEK cache: unwrapped file keys by the SHA-256 of the whole 512-byte header they were
//! authenticated with, bounded in entries and age.
//!
//! A hit saves a KMS call on open. It is found only for the very header bytes that were
//! authenticated when the entry was made (the KMS unwrapped the DEK under the header's context,
//! the tag matched): a header changed in any byte, the key id included, misses and goes to the
//! KMS, which refuses it. The TTL bounds how long a key the KMS would now refuse
//! (disabled, deleted) keeps opening files. Evicted entries are dropped (once no open file
//! holds them), which zeroizes the DEK, its derived keys and their expanded AES-GCM keys (see
//! docs/SECURITY.md for the stack copies that stay).

use crate::format::{FileCipher, HEADER_LEN};
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

/// SHA-256 of the encoded header.
type CacheKey = [u8; 32];

fn key_of(header: &[u8; HEADER_LEN]) -> CacheKey {
    crate::crypto::sha256(header)
}

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

    /// The cached cipher of the file whose encoded header is `header`, if present and younger
    /// than the TTL.
    pub fn get(&self, header: &[u8; HEADER_LEN]) -> Option<Arc<FileCipher>> {
        let key = key_of(header);
        let mut inner = self.lock();
        let Inner { entries, stats } = &mut *inner;
        let Some(entries) = entries else {
            stats.misses += 1;
            return None;
        };
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

    /// Caches `cipher` for the file whose encoded header is `header`: call it only once the
    /// header is authenticated.
    pub fn insert(&self, header: &[u8; HEADER_LEN], cipher: Arc<FileCipher>) {
        let key = key_of(header);
        let mut inner = self.lock();
        let Inner { entries, stats } = &mut *inner;
        let Some(entries) = entries else { return };
        let entry = Entry {
            cipher,
            inserted: Instant::now(),
        };
        if let Some((old_key, _)) = entries.push(key, entry)
            && old_key != key
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
    use crate::format::HeaderVersion;

    fn cipher(id: u8) -> Arc<FileCipher> {
        Arc::new(FileCipher::new(
            &Key256::random(),
            [id; 16],
            HeaderVersion::V2,
        ))
    }

    /// Header bytes standing for file `id` (the cache never parses them).
    fn header(id: u8) -> [u8; HEADER_LEN] {
        [id; HEADER_LEN]
    }

    #[test]
    fn hit_miss_and_eviction_counts() {
        let cache = DekCache::new(2, Duration::from_secs(60));
        assert!(cache.get(&header(1)).is_none());
        cache.insert(&header(1), cipher(1));
        cache.insert(&header(2), cipher(2));
        assert!(cache.get(&header(1)).is_some());
        cache.insert(&header(3), cipher(3)); // evicts 2, the least recently used
        assert!(cache.get(&header(2)).is_none());
        assert!(cache.get(&header(3)).is_some());
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
    fn every_header_byte_is_part_of_the_key() {
        let cache = DekCache::new(4, Duration::from_secs(60));
        let good = header(1);
        cache.insert(&good, cipher(1));
        for i in 0..HEADER_LEN {
            let mut changed = good;
            changed[i] ^= 0x01;
            assert!(cache.get(&changed).is_none(), "byte {i} changed, yet a hit");
        }
        assert!(cache.get(&good).is_some());
        assert_eq!(cache.stats().misses, HEADER_LEN as u64);
    }

    #[test]
    fn reinserting_a_header_replaces_its_entry_without_an_eviction() {
        let cache = DekCache::new(2, Duration::from_secs(60));
        cache.insert(&header(1), cipher(1));
        let newer = cipher(9);
        cache.insert(&header(1), newer.clone());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.stats().evictions, 0);
        assert!(Arc::ptr_eq(&cache.get(&header(1)).expect("hit"), &newer));
    }

    #[test]
    fn entries_expire_after_ttl() {
        let cache = DekCache::new(4, Duration::from_millis(0));
        cache.insert(&header(1), cipher(1));
        std::thread::sleep(Duration::from_millis(2));
        assert!(cache.get(&header(1)).is_none());
        assert_eq!(cache.stats().expirations, 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = DekCache::new(0, Duration::from_secs(60));
        cache.insert(&header(1), cipher(1));
        assert!(cache.get(&header(1)).is_none());
        assert_eq!(cache.len(), 0);
    }
}
